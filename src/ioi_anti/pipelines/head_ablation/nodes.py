"""Nodes of the head_ablation pipeline: measure every head, then tabulate Δ per head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ioi_anti.analysis.categories import run_pair
from ioi_anti.analysis.quantisation import mark_quant_sensitive
from ioi_anti.execution import Results, run_jobs
from ioi_anti.measure.plan import head_tables, sweep_jobs
from ioi_anti.measure.requantised import Measured, requantised_plan, saved_requantised
from ioi_anti.params import Categorisation, HeadAblation, Quantisation, Registry, Runtime
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
    requantised: dict[str, Callable[[], Measured]],
    models: list[str],
    registry: Registry,
    runtime: Runtime,
    params: HeadAblation,
    categorisation: Categorisation,
    quantisation: Quantisation,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The per-head table, the attribution agreement, and the run's metadata. Where the quantisation pipeline
    has measured a model re-quantised with these prompts and settings, its heads are marked ``quant_sensitive``
    (their category changes); elsewhere the column is missing (NA)."""
    per_head, agreement = head_tables(tasks, effects, baseline_partitions, tokenised, models, registry, runtime, params,
                                      categorisation, seed)
    pair = run_pair(tasks, categorisation.pair)
    plan = requantised_plan(tokenised, models, registry, runtime, params, categorisation, pair.names,
                            quantisation.requantise_to, seed)
    saved = [tables["heads"] for tables in saved_requantised(requantised, plan).values()]
    per_head = mark_quant_sensitive(per_head, pd.concat(saved, ignore_index=True) if saved else None,
                                    categorisation.tau, pair)
    return per_head, agreement, run_metadata(per_head, tasks, models, runtime, params, seed)
