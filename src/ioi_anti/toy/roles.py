"""Head roles of the toy models against the objective mix: per model, then over seeds.

A task's Δ is a fraction of the model's gap on it, so it means something only where the model has
learned the task: a model whose gap's 95 % interval does not lie above 0 (e.g. an IOI gap at
λ = 0, where IOI was never trained) gets no strong-head count for that task, and no shared count or
correlation. Over seeds, each number is the mean with a t interval over the seeds where it exists.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ioi_anti.analysis.categories import Pair, categorise, pair_roles, rowwise_pearson
from ioi_anti.measure.metrics import bootstrap_indices
from ioi_anti.toy.tasks import TOY_ANTI, TOY_IOI

TOY_PAIR = Pair(TOY_IOI, TOY_ANTI)
GRID = ["size", "mix", "seed"]
PER_MODEL = ("n_strong_toy_ioi", "n_strong_toy_anti", "n_shared", "shared_fraction", "pearson")


def learned(baseline: pd.DataFrame, n_boot: int, seed: int, level: float = 0.95) -> pd.DataFrame:
    """Per model and task: the gap (mean of clean − reference metric over prompts), its interval's lower
    end, and ``learned``: that end lies above 0."""
    rows = []
    for (model, task), frame in baseline.groupby(["model_id", "task"], sort=False):
        gaps = (frame["m_clean"] - frame["m_ref"]).to_numpy()
        low = np.percentile(gaps[bootstrap_indices(len(gaps), n_boot, seed)].mean(-1), 100 * (1 - level) / 2)
        rows.append({"model": model, "task": task, "gap": gaps.mean(), "gap_low": low, "learned": bool(low > 0)})
    return pd.DataFrame(rows)


def categorise_learned(per_head: pd.DataFrame, gaps: pd.DataFrame, tau: float) -> pd.DataFrame:
    """Every head categorised on the toy pair at τ, a task a model has not learned counting as weak for all
    its heads (its Δ is a fraction of a gap near 0); ``learned_<task>`` says which."""
    heads = categorise(per_head, tau, TOY_PAIR)
    ok = gaps.pivot(index="model", columns="task", values="learned")
    for task in TOY_PAIR.names:
        heads[f"learned_{task}"] = heads["model"].map(ok[task]).astype(bool)
        for flag in ("strong", "robust"):
            heads[f"{flag}_{task}"] &= heads[f"learned_{task}"]
    heads[["category", "category_robust", "borderline"]] = pair_roles(heads, TOY_PAIR)
    return heads


def model_roles(heads: pd.DataFrame) -> pd.DataFrame:
    """One row per toy model (``heads``: :func:`categorise_learned`): strong heads per learned task, shared
    heads and their share of the strong heads, and the Pearson r of Δ_toy_ioi with Δ_toy_anti over all
    heads (NaN where a task is not learned)."""
    rows = []
    for model, frame in heads.groupby("model", sort=False):
        learned_ioi, learned_anti = bool(frame["learned_toy_ioi"].iloc[0]), bool(frame["learned_toy_anti"].iloc[0])
        both = learned_ioi and learned_anti
        n_ioi, n_anti = int(frame["strong_toy_ioi"].sum()), int(frame["strong_toy_anti"].sum())
        n_shared = int((frame["strong_toy_ioi"] & frame["strong_toy_anti"]).sum())
        n_any = int((frame["strong_toy_ioi"] | frame["strong_toy_anti"]).sum())
        r = rowwise_pearson(frame["delta_toy_ioi"].to_numpy(float), frame["delta_toy_anti"].to_numpy(float))
        first = frame.iloc[0]
        rows.append({"model": model, "size": first["size"], "mix": first["mix"], "seed": first["seed"],
                     "n_heads": len(frame), "learned_toy_ioi": learned_ioi, "learned_toy_anti": learned_anti,
                     "n_strong_toy_ioi": n_ioi if learned_ioi else np.nan,
                     "n_strong_toy_anti": n_anti if learned_anti else np.nan,
                     "n_shared": n_shared if both else np.nan,
                     "shared_fraction": n_shared / n_any if both and n_any else np.nan,
                     "pearson": float(r) if both else np.nan, "tau": first["tau"]})
    return pd.DataFrame(rows)


def over_seeds(roles: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per size and mix: each per-model number's mean over the seeds where it exists, with a t interval
    (``_low``, ``_high``; equal to the mean for one seed) and how many seeds it rests on (``n_<name>``)."""
    rows = []
    for (size, mix), frame in roles.groupby(["size", "mix"], sort=True):
        row: dict[str, object] = {"size": size, "mix": mix, "n_seeds": len(frame)}
        for name in PER_MODEL:
            values = frame[name].dropna().to_numpy(float)
            mean = values.mean() if len(values) else np.nan
            if len(values) > 1 and values.std(ddof=1) > 0:
                low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=stats.sem(values))
            else:
                low = high = mean
            row |= {name: mean, f"{name}_low": low, f"{name}_high": high, f"n_{name}": len(values)}
        rows.append(row)
    return pd.DataFrame(rows)
