"""Nodes of the head_ablation pipeline."""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from ioi_anti.checkpoints import parse_model_id
from ioi_anti.execution import Job, Results, run_jobs
from ioi_anti.metrics import bootstrap_delta, bootstrap_indices, delta_divisors
from ioi_anti.models import resolve_device
from ioi_anti.run_models import check_run_models, resolve_models
from ioi_anti.sweep import (
    MODES,
    ModelSweep,
    Screen,
    Selection,
    clean_pair_ids,
    estimated_deltas,
    fingerprint,
    model_tokens,
    numeric_runtime,
    partition_prefix,
    partition_problem,
    screen_selection,
    sweep_job,
    task_baseline,
    task_gaps,
    task_tokens,
)
from ioi_anti.tasks import load_tasks

logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("torch", "transformers", "transformer-lens", "kedro", "kedro-datasets", "ioi_anti")


def _screen(params: dict[str, Any], categorisation: dict[str, Any]) -> Screen | None:
    """The screening rule of a ``screen`` run (None in ``exact`` mode); bad settings fail here."""
    mode = params.get("mode", "exact")
    if mode not in MODES:
        raise ValueError(f"head_ablation.mode must be one of {MODES}; got {mode!r}.")
    if mode == "exact":
        return None
    taus = [categorisation["tau"], *categorisation.get("sensitivity_taus", [])]
    return Screen(tau_min=float(min(taus)), margin=float(params["screen"]["margin"]),
                  top_k=int(params["screen"]["top_k"]))


def _settings(runtime: dict[str, Any], params: dict[str, Any], screen: Screen | None) -> dict[str, Any]:
    """What a model's sweep partitions depend on (hashed into their keys): nothing that cannot change
    a number, so batch sizes are left out, and the resample seed only counts for resample ablation."""
    settings = {"runtime": numeric_runtime(runtime), "ablation": params["ablation"]}
    if params["ablation"] == "resample":
        settings["resample_seed"] = int(params["seed"])
    return settings if screen is None else settings | {"screen": vars(screen)}


def sweep_heads(
    tasks: list[str],
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    done: dict[str, Any],
    models: list[str],
    registry: dict[str, Any],
    runtime: dict[str, Any],
    params: dict[str, Any],
    categorisation: dict[str, Any],
) -> Results:
    """Jobs for what is not done: per model and task, one attribution job plus one per layer.

    The partitioned dataset saves each job's result as it arrives (in process: one at a time, in
    key order; on a cluster: as workers finish them), so an interrupted sweep keeps every finished
    layer and a re-run computes only the rest; a model and task with nothing left is skipped without
    loading the model, so adding a task to a finished run measures only that task. In ``screen`` mode
    a layer's job measures exactly only the heads that the attribution estimates select.
    """
    screen = _screen(params, categorisation)
    jobs: dict[str, Job] = {}
    for spec in check_run_models(models, registry):
        model_prompts = model_tokens(tokenised, spec.model_id)
        for task in load_tasks(tasks):
            tokens = task_tokens(model_prompts, task.name)
            baseline = task_baseline(baseline_partitions, spec.model_id, tokens, runtime)
            n_layers, n_heads = int(baseline["n_layers"].iloc[0]), int(baseline["n_heads"].iloc[0])
            prefix = _prefix(spec.model_id, task.name, tokens, runtime, params, screen)
            wanted = [f"{prefix}/attribution"] + [f"{prefix}/layer_{layer:03d}" for layer in range(n_layers)]
            wanted += [f"{prefix}/score"] if task.score is not None else []
            pair_ids = clean_pair_ids(tokens)
            todo = [key for key in wanted
                    if key not in done or _damaged(key, done[key], n_layers, n_heads, pair_ids, screen is None)]
            if not todo:
                logger.info("%s, %s: every head already measured (%s): skipped.", spec.model_id, task.name, prefix)
                continue
            if len(todo) < len(wanted):
                logger.info("%s, %s: resuming the sweep, %d of %d jobs left.", spec.model_id, task.name, len(todo),
                            len(wanted))
            saved = f"{prefix}/attribution"
            screening = None if screen is None else (task_gaps(baseline), screen)
            sweep = ModelSweep(spec, tokens, runtime, params["ablation"], int(params["seed"]),
                               done[saved]() if screen is not None and saved not in todo else None, screening,
                               roles={task.name: task.ablation_roles},
                               scores={task.name: task.score} if task.score is not None else None)
            jobs |= {key: Job(spec.model_id, sweep_job, (sweep, key)) for key in todo}
    return run_jobs(jobs, runtime, "head sweep")


def _prefix(model_id: str, task: str, tokens: pd.DataFrame, runtime: dict[str, Any], params: dict[str, Any],
            screen: Screen | None) -> str:
    """Partition prefix of one model's sweep of one task (``tokens``: that task's prompts)."""
    return partition_prefix(model_id, task, fingerprint(model_id, tokens, _settings(runtime, params, screen)))


def _damaged(key: str, load: Callable[[], pd.DataFrame], n_layers: int, n_heads: int,
             pair_ids: dict[str, np.ndarray], every_head: bool) -> bool:
    """Whether a saved partition cannot be reused (unreadable, or not the expected grid and prompts):
    then it is recomputed, and the warning names it."""
    whole_grid = key.endswith(("/attribution", "/score"))
    layers = range(n_layers) if whole_grid else [int(key.rsplit("_", 1)[1])]
    problem = partition_problem(load, layers, n_heads, pair_ids, every_head or whole_grid)
    if problem:
        logger.warning("Saved partition %s is damaged (%s): recomputing it.", key, problem)
    return problem is not None


def summarise_heads(
    tasks: list[str],
    effects: dict[str, Callable[[], pd.DataFrame]],
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: dict[str, Any],
    runtime: dict[str, Any],
    params: dict[str, Any],
    categorisation: dict[str, Any],
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The per-head table (every task: Delta with intervals, how each head was measured, the
    attribution estimate), the attribution agreement per model, task and τ, and the run's metadata."""
    screen = _screen(params, categorisation)
    taus = sorted({categorisation["tau"], *categorisation.get("sensitivity_taus", [])})
    run_tasks = load_tasks(tasks)
    names = [task.name for task in run_tasks]
    score_names = {task.name: task.score_name for task in run_tasks if task.score is not None}
    tables, agreement = [], []
    for spec in resolve_models(models, registry):
        model_prompts = model_tokens(tokenised, spec.model_id)
        baselines, longs = [], []
        for task in names:
            tokens = task_tokens(model_prompts, task)
            baselines.append(task_baseline(baseline_partitions, spec.model_id, tokens, runtime))
            prefix = _prefix(spec.model_id, task, tokens, runtime, params, screen)
            keys = sorted(k for k in effects if k.startswith(f"{prefix}/"))
            if not keys:
                raise KeyError(f"{spec.model_id}: no head measurements of {task}; run "
                               "`kedro run --pipeline head_ablation`.")
            longs += [effects[k]() for k in keys]
        # tuning is the registry's: a baseline saved before it was recorded lacks the column
        baseline = pd.concat(baselines, ignore_index=True).assign(tuning=spec.tuning)
        long = pd.concat(longs, ignore_index=True)
        selected = None
        if screen is not None:
            attribution = long[long["method"] == "attribution"]
            selected = screen_selection(estimated_deltas(attribution, task_gaps(baseline)), screen)
        table = model_head_table(long, baseline, names, params, seed, selected, score_names)
        tables.append(table.assign(ablation=params["ablation"], mode=params.get("mode", "exact")))
        agreement += attribution_agreement(table, names, taus)
    metadata = run_metadata(pd.concat(tables), names, models, runtime, params, seed)
    return pd.concat(tables, ignore_index=True), pd.DataFrame(agreement), metadata


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
            raise ValueError(f"{model}: no {method} measurements; re-run `kedro run --pipeline head_ablation`.")
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
                                 f"H{missing[0][1]}); re-run `kedro run --pipeline head_ablation` to finish the sweep.")
            if (counts != n_prompts[task]).any():
                raise ValueError(f"{model}: {task}/{method} has heads measured on other than "
                                 f"{n_prompts[task]} prompts (duplicate or partial partitions).")


def model_head_table(long: pd.DataFrame, baseline: pd.DataFrame, tasks: list[str], params: dict[str, Any],
                     seed: int, exact_heads: Selection | None = None,
                     score_names: dict[str, str] | None = None) -> pd.DataFrame:
    """Delta per head and task (``tasks``, in that order), normalised by the task gap (or raw, with
    ``params["delta"]`` = raw), with a paired ratio bootstrap; and, for a task with its own per-head score
    (``score_names``: task -> column), that score's mean over the task's clean prompts.

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
    gap_ok, unit = True, params.get("delta", "normalised")
    for task in tasks:
        task_base = baseline[baseline["task"] == task].sort_values("pair_id")
        gaps = (task_base["m_clean"] - task_base["m_ref"]).to_numpy()
        idx = bootstrap_indices(len(gaps), params["n_boot"], seed)
        for method, column in (("exact", f"delta_{task}"), ("attribution", f"attr_delta_{task}")):
            frame = long[(long["task"] == task) & (long["method"] == method)]
            wide = frame.pivot_table(index=["layer", "head"], columns="pair_id", values="effect").reindex(
                index=grid, columns=task_base["pair_id"].to_numpy()).to_numpy()
            delta, low, high = bootstrap_delta(wide, delta_divisors(gaps, unit), idx, params["ci"])
            out[column], out[f"{column}_low"], out[f"{column}_high"] = delta, low, high
        gap_low = np.percentile(gaps[idx].mean(-1), 100 * (1 - params["ci"]) / 2)
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
            raise ValueError(f"{facts['model_id']}: no {column} measured; re-run `kedro run --pipeline head_ablation`.")
        out[column] = rows.groupby(["layer", "head"])["effect"].mean().reindex(grid).to_numpy()
    checkpoint = parse_model_id(str(facts["model_id"]))
    return out.assign(model=facts["model_id"], base_model=checkpoint.base_model, checkpoint=checkpoint.label,
                      training_step=checkpoint.training_step, family=facts["family"],
                      tuning=facts["tuning"], n_params=int(facts["n_params"]), n_layers=n_layers, n_heads=n_heads,
                      gap_ok=gap_ok, delta_unit=unit)


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


def run_metadata(per_head: pd.DataFrame, tasks: list[str], models: list[str], runtime: dict[str, Any],
                 params: dict[str, Any], seed: int) -> dict[str, Any]:
    """What a reader needs to reproduce the run: tasks, models, prompts, ablation, seed, versions."""
    first = per_head.groupby("model").first()
    return {
        "tasks": list(tasks), "models": list(models),
        "model_config": first[["family", "tuning", "n_params", "n_layers", "n_heads"]].reset_index().to_dict("records"),
        "ablation": params["ablation"], "mode": params.get("mode", "exact"), "delta": params.get("delta", "normalised"),
        "n_boot": params["n_boot"],
        "ci": params["ci"], "seed": seed,
        **{f"n_prompts_{task}": int(first[f"n_prompts_{task}"].max()) for task in tasks},
        "runtime": dict(runtime), "device": str(resolve_device(runtime["device"])),
        "python": platform.python_version(), "machine": platform.platform(),
        "versions": {name: version(name) for name in VERSIONED_PACKAGES},
    }
