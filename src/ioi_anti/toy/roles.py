"""Head roles of the toy models against the objective mix: per model, then over seeds, and the test of
whether shared heads need both objectives.

A task's Δ is a fraction of the model's gap on it, so it means something only where the model has learned
the task: *learned* is held-out top-1 accuracy of at least ``learned_accuracy`` on every kind of prompt of
the task (toy IOI: the IO; toy anti-repetition: a new list item and the item to copy). A model that has
not learned a task it was trained on with a share of at least ``required_share`` *falls short*: it is
flagged in every table and left out of the role statistics. A task a model was not required to learn and
did not learn gives no strong-head count (e.g. IOI at λ = 0). Over seeds, counts and the shared fraction
get a percentile bootstrap interval over seeds (it stays within the quantity's range) and the Pearson r a
Fisher-z t interval; each says how many seeds it rests on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ioi_anti.analysis.categories import Pair, categorise, pair_roles, rowwise_pearson
from ioi_anti.params import ToyModels
from ioi_anti.toy.tasks import TOY_ANTI, TOY_IOI
from ioi_anti.toy.train import required_kinds

TOY_PAIR = Pair(TOY_IOI, TOY_ANTI)
TASK_KINDS = {TOY_IOI.name: ("ioi",), TOY_ANTI.name: ("list", "copy")}
COUNTS = ("n_strong_toy_ioi", "n_strong_toy_anti", "n_shared", "shared_fraction")
PER_MODEL = (*COUNTS, "pearson")


def learned(accuracy: pd.DataFrame, settings: ToyModels) -> pd.DataFrame:
    """Per model and task: its held-out accuracy (the lowest of its kinds'), ``learned`` (at least
    ``learned_accuracy``), ``required`` (trained with a share of at least ``required_share``), ``falls_short``
    (required, not learned), and the step training stopped at and whether it converged."""
    rows = []
    for model, frame in accuracy.groupby("model", sort=False):
        by_kind = frame.set_index("kind")["accuracy"]
        first = frame.iloc[0]
        for task, kinds in TASK_KINDS.items():
            score = float(min(by_kind[kind] for kind in kinds))
            required = kinds[0] in required_kinds(float(first["mix"]), settings.required_share)
            ok = score >= settings.learned_accuracy
            rows.append({"model": model, "size": first["size"], "mix": first["mix"], "seed": first["seed"],
                         "task": task, "accuracy": score, "learned": ok, "required": required,
                         "falls_short": required and not ok, "steps": first["steps"], "converged": first["converged"]})
    return pd.DataFrame(rows)


def mask_unlearned(per_head: pd.DataFrame, gaps: pd.DataFrame) -> pd.DataFrame:
    """``per_head`` with the Δ (and interval) of every task a model has not learned set to NaN: a fraction of a
    gap the model does not produce, it is no measurement (its heads count as weak, its correlations as none)."""
    ok = gaps.pivot(index="model", columns="task", values="learned")
    out = per_head.copy()
    for task in TOY_PAIR.names:
        unlearned = ~out["model"].map(ok[task]).astype(bool)
        out.loc[unlearned, [f"delta_{task}", f"delta_{task}_low", f"delta_{task}_high"]] = np.nan
    return out


def categorise_learned(per_head: pd.DataFrame, gaps: pd.DataFrame, tau: float) -> pd.DataFrame:
    """Every head categorised on the toy pair at τ, a task a model has not learned counting as weak for all
    its heads (its Δ is a fraction of a gap it does not produce); ``learned_<task>`` says which, and
    ``falls_short`` flags a model that missed a task it was required to learn."""
    heads = categorise(per_head, tau, TOY_PAIR)
    ok = gaps.pivot(index="model", columns="task", values="learned")
    short = gaps.groupby("model")["falls_short"].any()
    for task in TOY_PAIR.names:
        heads[f"learned_{task}"] = heads["model"].map(ok[task]).astype(bool)
        for flag in ("strong", "robust"):
            heads[f"{flag}_{task}"] &= heads[f"learned_{task}"]
    heads["falls_short"] = heads["model"].map(short).astype(bool)
    heads[["category", "category_robust", "borderline"]] = pair_roles(heads, TOY_PAIR)
    return heads


def model_roles(heads: pd.DataFrame) -> pd.DataFrame:
    """One row per toy model (``heads``: :func:`categorise_learned`): strong heads per learned task, shared
    heads and their share of the strong heads, and the Pearson r of Δ_toy_ioi with Δ_toy_anti over all
    heads (NaN where a task is not learned), and whether it falls short."""
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
                     "falls_short": bool(first["falls_short"]),
                     "n_strong_toy_ioi": n_ioi if learned_ioi else np.nan,
                     "n_strong_toy_anti": n_anti if learned_anti else np.nan,
                     "n_shared": n_shared if both else np.nan,
                     "shared_fraction": n_shared / n_any if both and n_any else np.nan,
                     "pearson": float(r) if both else np.nan, "tau": first["tau"]})
    return pd.DataFrame(rows)


def _bootstrap(values: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean over seeds (within the values' range by construction)."""
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.mean()), float(values.mean())
    result = stats.bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                             rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _fisher(values: np.ndarray, level: float) -> tuple[float, float, float]:
    """The mean correlation over seeds through Fisher's z, with a t interval in z mapped back to (−1, 1)."""
    z = np.arctanh(np.clip(values, -0.999999, 0.999999))
    mean = float(np.tanh(z.mean()))
    if len(z) < 2 or z.std(ddof=1) == 0:
        return mean, mean, mean
    low, high = stats.t.interval(level, len(z) - 1, loc=z.mean(), scale=stats.sem(z))
    return mean, float(np.tanh(low)), float(np.tanh(high))


def over_seeds(roles: pd.DataFrame, n_boot: int, seed: int, level: float = 0.95) -> pd.DataFrame:
    """Per size and mix, over the seeds whose model does not fall short: each per-model number's mean with
    its interval (``_low``, ``_high``; bootstrap for counts and the shared fraction, Fisher z for r; equal to
    the mean for one seed), how many seeds it rests on (``n_<name>``) and how many models were left out."""
    rows = []
    for (size, mix), frame in roles.groupby(["size", "mix"], sort=True):
        kept = frame[~frame["falls_short"]]
        row: dict[str, object] = {"size": size, "mix": mix, "n_seeds": len(frame),
                                  "n_falls_short": int(frame["falls_short"].sum())}
        for name in PER_MODEL:
            values = kept[name].dropna().to_numpy(float)
            if not len(values):
                mean = low = high = np.nan
            elif name == "pearson":
                mean, low, high = _fisher(values, level)
            else:
                mean = float(values.mean())
                low, high = _bootstrap(values, n_boot, seed, level)
            row |= {name: mean, f"{name}_low": low, f"{name}_high": high, f"n_{name}": len(values)}
        rows.append(row)
    return pd.DataFrame(rows)


def sharing_test(roles: pd.DataFrame, settings: ToyModels, seed: int, level: float = 0.95) -> pd.DataFrame:
    """Do shared heads appear only when both objectives are trained? Per size: the mean shared fraction of
    the models trained on both (each objective's share at least ``required_share``) against the models
    trained mostly on one (both tasks learned all the same, e.g. λ = 0.1), their difference with a
    bootstrap interval, and a two-sided permutation test's p-value (models that fall short left out)."""
    rows = []
    for size, frame in roles[~roles["falls_short"]].groupby("size", sort=False):
        frame = frame.dropna(subset=["shared_fraction"])
        both = np.minimum(frame["mix"], 1 - frame["mix"]) >= settings.required_share
        middle, edge = frame.loc[both, "shared_fraction"].to_numpy(), frame.loc[~both, "shared_fraction"].to_numpy()
        row = {"size": size, "n_both": len(middle), "n_mostly_one": len(edge),
               "mixes_both": ", ".join(f"{m:g}" for m in sorted(frame.loc[both, "mix"].unique())),
               "mixes_mostly_one": ", ".join(f"{m:g}" for m in sorted(frame.loc[~both, "mix"].unique())),
               "shared_both": middle.mean() if len(middle) else np.nan,
               "shared_mostly_one": edge.mean() if len(edge) else np.nan}
        if len(middle) >= 2 and len(edge) >= 2:
            def difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
                return np.mean(a, axis=axis) - np.mean(b, axis=axis)

            boot = stats.bootstrap((middle, edge), difference, n_resamples=2000, confidence_level=level,
                                   method="percentile", rng=np.random.default_rng(seed))
            test = stats.permutation_test((middle, edge), difference, permutation_type="independent",
                                          n_resamples=9999, rng=np.random.default_rng(seed))
            row |= {"difference": difference(middle, edge), "difference_low": boot.confidence_interval.low,
                    "difference_high": boot.confidence_interval.high, "p_value": test.pvalue}
        else:
            row |= {"difference": np.nan, "difference_low": np.nan, "difference_high": np.nan, "p_value": np.nan}
        rows.append(row)
    return pd.DataFrame(rows)
