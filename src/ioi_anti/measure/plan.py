"""Planning a head sweep: the screening rule, what the sweep's partitions depend on, their keys,
and which saved partitions are damaged and must be measured again.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from ioi_anti.execution import Job
from ioi_anti.measure.head_table import attribution_agreement, model_head_table
from ioi_anti.measure.partitions import (
    clean_pair_ids,
    fingerprint,
    model_tokens,
    numeric_runtime,
    partition_prefix,
    partition_problem,
    task_baseline,
    task_tokens,
)
from ioi_anti.measure.sweep import (
    ModelSweep,
    Screen,
    estimated_deltas,
    screen_selection,
    sweep_job,
    task_gaps,
)
from ioi_anti.models.sources import check_run_models
from ioi_anti.models.spec import resolve_models
from ioi_anti.params import Categorisation, HeadAblation, Registry, Runtime
from ioi_anti.tasks import load_tasks

logger = logging.getLogger(__name__)


def screen_rule(params: HeadAblation, categorisation: Categorisation) -> Screen | None:
    """The screening rule of a ``screen`` run (None in ``exact`` mode)."""
    if params.mode == "exact":
        return None
    return Screen(tau_min=min(categorisation.taus), margin=params.screen.margin, top_k=params.screen.top_k)


def partition_settings(runtime: Runtime, params: HeadAblation, screen: Screen | None) -> dict[str, object]:
    """What a model's sweep partitions depend on (hashed into their keys): nothing that cannot change
    a number, so batch sizes are left out, and the resample seed only counts for resample ablation."""
    settings: dict[str, object] = {"runtime": numeric_runtime(runtime), "ablation": params.ablation}
    if params.ablation == "resample":
        settings["resample_seed"] = params.seed
    return settings if screen is None else settings | {"screen": vars(screen)}


def sweep_prefix(model_id: str, task: str, tokens: pd.DataFrame, runtime: Runtime, params: HeadAblation,
                 screen: Screen | None) -> str:
    """Partition prefix of one model's sweep of one task (``tokens``: that task's prompts)."""
    return partition_prefix(model_id, task, fingerprint(model_id, tokens, partition_settings(runtime, params, screen)))


def is_damaged(key: str, load: Callable[[], pd.DataFrame], n_layers: int, n_heads: int,
             pair_ids: dict[str, np.ndarray], every_head: bool) -> bool:
    """Whether a saved partition cannot be reused (unreadable, or not the expected grid and prompts):
    then it is recomputed, and the warning names it."""
    whole_grid = key.endswith(("/attribution", "/score"))
    layers = range(n_layers) if whole_grid else [int(key.rsplit("_", 1)[1])]
    problem = partition_problem(load, layers, n_heads, pair_ids, every_head or whole_grid)
    if problem:
        logger.warning("Saved partition %s is damaged (%s): recomputing it.", key, problem)
    return problem is not None


def sweep_jobs(
    tasks: list[str],
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    done: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: Registry,
    runtime: Runtime,
    params: HeadAblation,
    categorisation: Categorisation,
) -> dict[str, Job]:
    """The sweep's jobs for what is not done: per model and task, one attribution job plus one per layer.

    The partitioned dataset saves each job's result as it arrives (in process: one at a time, in
    key order; on a cluster: as workers finish them), so an interrupted sweep keeps every finished
    layer and a re-run computes only the rest; a model and task with nothing left is skipped without
    loading the model, so adding a task to a finished run measures only that task. In ``screen`` mode
    a layer's job measures exactly only the heads that the attribution estimates select.
    """
    screen = screen_rule(params, categorisation)
    jobs: dict[str, Job] = {}
    for spec in check_run_models(models, registry):
        model_prompts = model_tokens(tokenised, spec.model_id)
        for task in load_tasks(tasks):
            tokens = task_tokens(model_prompts, task.name)
            baseline = task_baseline(baseline_partitions, spec.model_id, tokens, runtime)
            n_layers, n_heads = int(baseline["n_layers"].iloc[0]), int(baseline["n_heads"].iloc[0])
            prefix = sweep_prefix(spec.model_id, task.name, tokens, runtime, params, screen)
            wanted = [f"{prefix}/attribution"] + [f"{prefix}/layer_{layer:03d}" for layer in range(n_layers)]
            wanted += [f"{prefix}/score"] if task.score is not None else []
            pair_ids = clean_pair_ids(tokens)
            todo = [key for key in wanted
                    if key not in done or is_damaged(key, done[key], n_layers, n_heads, pair_ids, screen is None)]
            if not todo:
                logger.info("%s, %s: every head already measured (%s): skipped.", spec.model_id, task.name, prefix)
                continue
            if len(todo) < len(wanted):
                logger.info("%s, %s: resuming the sweep, %d of %d jobs left.", spec.model_id, task.name, len(todo),
                            len(wanted))
            saved = f"{prefix}/attribution"
            screening = None if screen is None else (task_gaps(baseline), screen)
            sweep = ModelSweep(spec, tokens, runtime, params.ablation, params.seed,
                               done[saved]() if screen is not None and saved not in todo else None, screening,
                               roles={task.name: task.ablation_roles},
                               scores={task.name: task.score} if task.score is not None else None)
            jobs |= {key: Job(spec.model_id, sweep_job, (sweep, key)) for key in todo}
    return jobs


def head_tables(
    tasks: list[str],
    effects: dict[str, Callable[[], pd.DataFrame]],
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: Registry,
    runtime: Runtime,
    params: HeadAblation,
    categorisation: Categorisation,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-head table (every task: Delta with intervals, how each head was measured, the
    attribution estimate) and the attribution agreement per model, task and τ."""
    screen = screen_rule(params, categorisation)
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
            prefix = sweep_prefix(spec.model_id, task, tokens, runtime, params, screen)
            keys = sorted(k for k in effects if k.startswith(f"{prefix}/"))
            if not keys:
                raise KeyError(f"{spec.model_id}: no head measurements of {task}; run "
                               "`kedro run --pipelines head_ablation`.")
            longs += [effects[k]() for k in keys]
        # tuning and quantisation are the registry's: a baseline saved before they were recorded lacks them
        baseline = pd.concat(baselines, ignore_index=True).assign(tuning=spec.tuning, quantisation=spec.quantisation)
        long = pd.concat(longs, ignore_index=True)
        selected = None
        if screen is not None:
            attribution = long[long["method"] == "attribution"]
            selected = screen_selection(estimated_deltas(attribution, task_gaps(baseline)), screen)
        table = model_head_table(long, baseline, names, params.n_boot, params.ci, seed, selected, score_names,
                                 params.delta)
        tables.append(table.assign(ablation=params.ablation, mode=params.mode))
        agreement += attribution_agreement(table, names, categorisation.taus)
    return pd.concat(tables, ignore_index=True), pd.DataFrame(agreement)
