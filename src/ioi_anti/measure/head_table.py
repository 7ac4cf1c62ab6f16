"""The per-head table: Δ per head and task with its bootstrap interval, how each head was measured,
the task's own per-head score, and how well attribution patching agreed with the exact sweep.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from ioi_anti.measure.metrics import bootstrap_delta, bootstrap_indices, delta_divisors
from ioi_anti.measure.sweep import (
    Selection,
)
from ioi_anti.models.checkpoints import parse_model_id
from ioi_anti.params import DeltaUnit


def validate_grid(long: pd.DataFrame, n_layers: int, n_heads: int, n_prompts: dict[str, int], model: str,
                  exact_heads: Selection | None = None) -> None:
    """Every (task, layer, head) of the model's grid is present, once per prompt, and nothing else, for
    every task of ``n_prompts``.

    ``exact_heads``: in a screening run, per task, the heads that must have exact measurements
    (every head has an attribution estimate); by default every head of the grid, for every task.
    """
    grid = pd.MultiIndex.from_product([range(n_layers), range(n_heads)], names=["layer", "head"])
    no_exact_needed = exact_heads is not None and not any(exact_heads.values())
    for method in ("exact", "attribution"):
        if method not in set(long["method"]) and not (method == "exact" and no_exact_needed):
            raise ValueError(f"{model}: no {method} measurements; re-run `kedro run --pipelines head_ablation`.")
    for task in n_prompts:
        for method in ("exact", "attribution"):
            frame = long[(long["task"] == task) & (long["method"] == method)]
            bad = frame[(frame["layer"] >= n_layers) | (frame["head"] >= n_heads) | (frame["layer"] < 0)]
            if not bad.empty:
                raise ValueError(f"{model}: {task}/{method} rows outside the {n_layers}x{n_heads} grid, e.g. "
                                 f"L{bad['layer'].iloc[0]}H{bad['head'].iloc[0]}.")
            counts = frame.groupby(["layer", "head"]).size()
            expected = grid if method == "attribution" or exact_heads is None else pd.MultiIndex.from_tuples(
                exact_heads.get(task, []), names=["layer", "head"])
            missing = expected.difference(counts.index)
            if len(missing):
                raise ValueError(f"{model}: {task}/{method} misses {len(missing)} heads (e.g. L{missing[0][0]}"
                                 f"H{missing[0][1]}); re-run `kedro run --pipelines head_ablation` to finish the "
                                 "sweep.")
            if (counts != n_prompts[task]).any():
                raise ValueError(f"{model}: {task}/{method} has heads measured on other than "
                                 f"{n_prompts[task]} prompts (duplicate or partial partitions).")


def model_head_table(long: pd.DataFrame, baseline: pd.DataFrame, tasks: list[str], n_boot: int, ci: float,
                     seed: int, exact_heads: Selection | None = None, score_names: dict[str, str] | None = None,
                     unit: DeltaUnit = "normalised") -> pd.DataFrame:
    """Delta per head and task (``tasks``, in that order), normalised by the task gap (or raw, with
    ``unit`` = raw), with a paired ratio bootstrap of ``n_boot`` resamples at level ``ci``; and, for a task
    with its own per-head score (``score_names``: task -> column), that score's mean over the task's clean
    prompts.

    Where a head has no exact measurement for a task (a screening run), its Delta for that task is
    the attribution estimate with its interval, and ``measured_by_<task>`` says ``estimate``. ``gap_ok``
    flags a model whose gap is not clearly positive, which makes normalised Δ meaningless (raw Δ not).
    """
    facts = baseline.iloc[0]
    n_layers, n_heads = int(facts["n_layers"]), int(facts["n_heads"])
    n_prompts = {task: int((baseline["task"] == task).sum()) for task in tasks}
    validate_grid(long, n_layers, n_heads, n_prompts, str(facts["model_id"]), exact_heads)
    grid = pd.MultiIndex.from_product([range(n_layers), range(n_heads)], names=["layer", "head"])
    out = pd.DataFrame(index=grid).reset_index()
    gap_ok = True
    for task in tasks:
        task_base = baseline[baseline["task"] == task].sort_values("pair_id")
        gaps = (task_base["m_clean"] - task_base["m_ref"]).to_numpy()
        idx = bootstrap_indices(len(gaps), n_boot, seed)
        for method, column in (("exact", f"delta_{task}"), ("attribution", f"attr_delta_{task}")):
            frame = long[(long["task"] == task) & (long["method"] == method)]
            wide = frame.pivot_table(index=["layer", "head"], columns="pair_id", values="effect").reindex(
                index=grid, columns=task_base["pair_id"].to_numpy()).to_numpy()
            delta, low, high = bootstrap_delta(wide, delta_divisors(gaps, unit), idx, ci)
            out[column], out[f"{column}_low"], out[f"{column}_high"] = delta, low, high
        gap_low = np.percentile(gaps[idx].mean(-1), 100 * (1 - ci) / 2)
        out[f"gap_{task}"], out[f"n_prompts_{task}"] = gaps.mean(), len(gaps)
        gap_ok = gap_ok and (unit == "raw" or bool(gap_low > 0))  # raw Δ does not divide by the gap
    for task in tasks:
        exact = out[f"delta_{task}"].notna()
        for suffix in ("", "_low", "_high"):
            out[f"delta_{task}{suffix}"] = out[f"delta_{task}{suffix}"].where(exact, out[f"attr_delta_{task}{suffix}"])
        out = out.drop(columns=[f"attr_delta_{task}_low", f"attr_delta_{task}_high"])
        out[f"measured_by_{task}"] = np.where(exact, "exact", "estimate")
    for task, column in (score_names or {}).items():
        rows = long[(long["task"] == task) & (long["method"] == "score")]
        if rows.empty:
            raise ValueError(f"{facts['model_id']}: no {column} measured; re-run "
                             "`kedro run --pipelines head_ablation`.")
        out[column] = rows.groupby(["layer", "head"])["effect"].mean().reindex(grid).to_numpy()
    checkpoint = parse_model_id(str(facts["model_id"]))
    return out.assign(model=facts["model_id"], base_model=checkpoint.base_model, checkpoint=checkpoint.label,
                      training_step=checkpoint.training_step, family=facts["family"],
                      tuning=facts["tuning"], quantisation=facts["quantisation"], n_params=int(facts["n_params"]),
                      n_layers=n_layers, n_heads=n_heads, gap_ok=gap_ok, delta_unit=unit)


def attribution_agreement(table: pd.DataFrame, tasks: list[str], taus: list[float],
                          top_fraction: float = 0.1) -> list[dict[str, Any]]:
    """How well attribution patching agrees with the exact Delta, per task and τ, over the heads
    measured exactly on that task (all heads in an exact run):

    * ``spearman``, ``pearson``: over those heads; ``spearman_top`` over the ``top_fraction`` of them
      with the largest exact |Delta| (at least 10), where near-zero heads no longer dominate the ranks;
    * ``recall_at_k`` / ``recall_at_2k``: the share of the ``n_strong`` heads with exact |Delta| >= τ
      found among the k = ``n_strong`` (or 2k) largest |estimates|;
    * ``sign_agreement``: the share of strong heads whose estimate has the exact Delta's sign.
    """
    rows = []
    for task in tasks:
        measured = table[table[f"measured_by_{task}"] == "exact"]
        n_top = min(len(measured), max(10, round(top_fraction * len(measured))))
        exact, attr = measured[f"delta_{task}"], measured[f"attr_delta_{task}"]
        top = exact.abs().nlargest(n_top).index
        base = {"model": table["model"].iloc[0], "task": task, "n_heads": len(measured),
                "spearman": _correlation(spearmanr, exact, attr), "pearson": _correlation(pearsonr, exact, attr),
                "spearman_top": _correlation(spearmanr, exact[top], attr[top]), "n_top": n_top}
        for tau in taus:
            strong = exact.index[exact.abs() >= tau]
            k = len(strong)
            ranked = attr.abs().sort_values(ascending=False).index
            recall = {f"recall_at_{name}": len(strong.intersection(ranked[: m * k])) / k if k else np.nan
                      for name, m in (("k", 1), ("2k", 2))}
            signs = float((np.sign(exact[strong]) == np.sign(attr[strong])).mean()) if k else np.nan
            rows.append(base | {"tau": tau, "n_strong": k, **recall, "sign_agreement": signs})
    return rows


def _correlation(method: Callable[..., Any], x: pd.Series, y: pd.Series) -> float:
    """A correlation, or NaN below three heads (a screening run can measure that few on a task)."""
    return float(method(x, y).statistic) if len(x) >= 3 else float("nan")
