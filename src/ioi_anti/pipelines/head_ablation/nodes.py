"""Nodes of the head_ablation pipeline: measure every head, then tabulate Δ per head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ioi_anti.execution import Results, run_jobs
from ioi_anti.measure.plan import head_tables, sweep_jobs
from ioi_anti.params import Categorisation, HeadAblation, Registry, Runtime
from ioi_anti.run.metadata import run_metadata


def sweep_heads(
    tasks: list[str],
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    done: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: Registry,
    runtime: Runtime,
    params: HeadAblation,
    categorisation: Categorisation,
) -> Results:
    """Measure every head not measured yet (resumable: see :func:`ioi_anti.measure.plan.sweep_jobs`)."""
    jobs = sweep_jobs(tasks, tokenised, baseline_partitions, done, models, registry, runtime, params, categorisation)
    return run_jobs(jobs, runtime, "head sweep")


def summarise_heads(
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
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The per-head table, the attribution agreement, and the run's metadata."""
    per_head, agreement = head_tables(tasks, effects, baseline_partitions, tokenised, models, registry, runtime, params,
                                      categorisation, seed)
    return per_head, agreement, run_metadata(per_head, tasks, models, runtime, params, seed)
