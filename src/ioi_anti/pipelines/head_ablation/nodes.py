"""Nodes of the head_ablation pipeline."""

from __future__ import annotations

import functools
import logging
import platform
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ioi_anti.metrics import bootstrap_delta, bootstrap_indices
from ioi_anti.models import resolve_device
from ioi_anti.run_models import check_run_models, resolve_models
from ioi_anti.sweep import TASKS, ModelSweep, baseline_key, fingerprint, model_tokens, partition_prefix

logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("torch", "transformers", "transformer-lens", "kedro", "kedro-datasets", "ioi_anti")


def _settings(runtime: dict[str, Any], params: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"runtime": runtime, "ablation": params["ablation"], "seed": seed}


def sweep_heads(
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    done: dict[str, Any],
    models: list[str],
    registry: dict[str, Any],
    runtime: dict[str, Any],
    params: dict[str, Any],
    seed: int,
) -> dict[str, Callable[[], pd.DataFrame]]:
    """Lazy jobs, one per model layer plus one attribution job per model, for what is not done.

    The partitioned dataset runs and saves them one by one (in sorted key order), so an
    interrupted sweep keeps every finished layer and a re-run computes only the rest; a model
    with nothing left is skipped without being loaded.
    """
    jobs: dict[str, Callable[[], pd.DataFrame]] = {}
    for spec in check_run_models(models, registry):
        tokens = model_tokens(tokenised, spec.model_id)
        n_layers = int(_baseline(baseline_partitions, spec.model_id, tokens, runtime)["n_layers"].iloc[0])
        prefix = partition_prefix(spec.model_id, fingerprint(spec.model_id, tokens, _settings(runtime, params, seed)))
        wanted = [f"{prefix}/layer_{layer:03d}" for layer in range(n_layers)] + [f"{prefix}/attribution"]
        todo = [key for key in wanted if key not in done]
        if not todo:
            logger.info("%s: every head already measured (%s): skipped.", spec.model_id, prefix)
            continue
        if len(todo) < len(wanted):
            logger.info("%s: resuming the sweep, %d of %d jobs left.", spec.model_id, len(todo), len(wanted))
        jobs.update(_model_jobs(ModelSweep(spec, tokens, runtime, params["ablation"], seed), todo))
    return jobs


def _model_jobs(sweep: ModelSweep, keys: list[str]) -> dict[str, Callable[[], pd.DataFrame]]:
    """One model's jobs with a progress bar; the job saved last releases the model's state."""
    bar: list[tqdm] = []
    last = max(keys)

    def job(key: str) -> pd.DataFrame:
        if not bar:
            bar.append(tqdm(total=len(keys), desc=f"{sweep.spec.model_id} head sweep", unit="job"))
        try:
            if key.endswith("/attribution"):
                return sweep.attribution_effects()
            return sweep.layer_effects(int(key.rsplit("_", 1)[1]))
        finally:
            bar[0].update(1)
            if key == last:
                bar[0].close()
                sweep.close()

    return {key: functools.partial(job, key) for key in keys}


def _baseline(
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]], model_id: str, tokens: pd.DataFrame,
    runtime: dict[str, Any],
) -> pd.DataFrame:
    key = baseline_key(model_id, tokens, runtime)
    if key not in baseline_partitions:
        raise KeyError(f"Baseline of {model_id} is missing ({key}): run `kedro run --pipeline data_generation`.")
    return baseline_partitions[key]()


def summarise_heads(
    effects: dict[str, Callable[[], pd.DataFrame]],
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: dict[str, Any],
    runtime: dict[str, Any],
    params: dict[str, Any],
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The per-head table (both tasks, exact Delta with intervals, attribution estimate),
    the attribution agreement per model and task, and the run's metadata."""
    tables, agreement = [], []
    for spec in resolve_models(models, registry):
        tokens = model_tokens(tokenised, spec.model_id)
        baseline = _baseline(baseline_partitions, spec.model_id, tokens, runtime)
        prefix = partition_prefix(spec.model_id, fingerprint(spec.model_id, tokens, _settings(runtime, params, seed)))
        keys = sorted(k for k in effects if k.startswith(f"{prefix}/"))
        if not keys:
            raise KeyError(f"{spec.model_id}: no head measurements; run `kedro run --pipeline head_ablation`.")
        long = pd.concat([effects[k]() for k in keys], ignore_index=True)
        table = model_head_table(long, baseline, params, seed)
        tables.append(table.assign(ablation=params["ablation"]))
        agreement += attribution_agreement(table)
    metadata = run_metadata(pd.concat(tables), models, runtime, params, seed)
    return pd.concat(tables, ignore_index=True), pd.DataFrame(agreement), metadata


def validate_grid(long: pd.DataFrame, n_layers: int, n_heads: int, n_prompts: dict[str, int], model: str) -> None:
    """Every (task, layer, head) of the model's grid is present, once per prompt, and nothing else."""
    for (task, method), frame in long.groupby(["task", "method"]):
        bad = frame[(frame["layer"] >= n_layers) | (frame["head"] >= n_heads) | (frame["layer"] < 0)]
        if not bad.empty:
            raise ValueError(f"{model}: {task}/{method} rows outside the {n_layers}x{n_heads} grid, e.g. "
                             f"L{bad['layer'].iloc[0]}H{bad['head'].iloc[0]}.")
        counts = frame.groupby(["layer", "head"]).size()
        expected = pd.MultiIndex.from_product([range(n_layers), range(n_heads)], names=["layer", "head"])
        missing = expected.difference(counts.index)
        if len(missing):
            raise ValueError(f"{model}: {task}/{method} misses {len(missing)} heads (e.g. L{missing[0][0]}"
                             f"H{missing[0][1]}); re-run `kedro run --pipeline head_ablation` to finish the sweep.")
        if (counts != n_prompts[task]).any():
            raise ValueError(f"{model}: {task}/{method} has heads measured on other than "
                             f"{n_prompts[task]} prompts (duplicate or partial partitions).")


def model_head_table(long: pd.DataFrame, baseline: pd.DataFrame, params: dict[str, Any], seed: int) -> pd.DataFrame:
    """Delta per head and task, normalised by the task gap, with a paired ratio bootstrap."""
    facts = baseline.iloc[0]
    n_layers, n_heads = int(facts["n_layers"]), int(facts["n_heads"])
    n_prompts = baseline.groupby("task").size().to_dict()
    validate_grid(long, n_layers, n_heads, n_prompts, str(facts["model_id"]))
    grid = pd.MultiIndex.from_product([range(n_layers), range(n_heads)], names=["layer", "head"])
    out = pd.DataFrame(index=grid).reset_index()
    gap_ok = True
    for task in TASKS:
        task_base = baseline[baseline["task"] == task].sort_values("pair_id")
        gaps = (task_base["m_clean"] - task_base["m_ref"]).to_numpy()
        idx = bootstrap_indices(len(gaps), params["n_boot"], seed)
        for method, column in (("exact", f"delta_{task}"), ("attribution", f"attr_delta_{task}")):
            frame = long[(long["task"] == task) & (long["method"] == method)]
            wide = frame.pivot_table(index=["layer", "head"], columns="pair_id", values="effect").reindex(grid)
            wide = wide[task_base["pair_id"].to_numpy()].to_numpy()
            delta, low, high = bootstrap_delta(wide, gaps, idx, params["ci"])
            out[column] = delta
            if method == "exact":
                out[f"{column}_low"], out[f"{column}_high"] = low, high
        gap_low = np.percentile(gaps[idx].mean(-1), 100 * (1 - params["ci"]) / 2)
        out[f"gap_{task}"], out[f"n_prompts_{task}"] = gaps.mean(), len(gaps)
        gap_ok = gap_ok and bool(gap_low > 0)
    return out.assign(model=facts["model_id"], family=facts["family"], n_params=int(facts["n_params"]),
                      n_layers=n_layers, n_heads=n_heads, gap_ok=gap_ok)


def attribution_agreement(table: pd.DataFrame, top_fraction: float = 0.1) -> list[dict[str, Any]]:
    """Spearman rank agreement of attribution patching with the exact Delta, per task: over all
    heads, and over the ``top_fraction`` of heads with the largest exact |Delta| (at least 10),
    where near-zero heads no longer dominate the ranks."""
    rows = []
    n_top = min(len(table), max(10, round(top_fraction * len(table))))
    for task in TASKS:
        exact, attr = table[f"delta_{task}"], table[f"attr_delta_{task}"]
        top = exact.abs().nlargest(n_top).index
        rows.append({"model": table["model"].iloc[0], "task": task, "spearman": float(spearmanr(exact, attr).statistic),
                     "n_heads": len(table), "spearman_top": float(spearmanr(exact[top], attr[top]).statistic),
                     "n_top": n_top})
    return rows


def run_metadata(per_head: pd.DataFrame, models: list[str], runtime: dict[str, Any], params: dict[str, Any],
                 seed: int) -> dict[str, Any]:
    """What a reader needs to reproduce the run: models, prompts, ablation, seed, versions."""
    first = per_head.groupby("model").first()
    return {
        "models": list(models),
        "model_config": first[["family", "n_params", "n_layers", "n_heads"]].reset_index().to_dict("records"),
        "ablation": params["ablation"], "n_boot": params["n_boot"], "ci": params["ci"], "seed": seed,
        "n_prompts_ioi": int(first["n_prompts_ioi"].max()), "n_prompts_anti": int(first["n_prompts_anti"].max()),
        "runtime": dict(runtime), "device": str(resolve_device(runtime["device"])),
        "python": platform.python_version(), "machine": platform.platform(),
        "versions": {name: version(name) for name in VERSIONED_PACKAGES},
    }
