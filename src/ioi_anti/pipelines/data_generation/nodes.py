"""Nodes of the data_generation pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd

from ioi_anti.execution import Job, Results, run_jobs
from ioi_anti.measure.baseline import baseline_row
from ioi_anti.measure.partitions import (
    baseline_key,
    baseline_problem,
    clean_pair_ids,
    model_baseline,
    model_tokens,
    task_tokens,
    tasks_of,
)
from ioi_anti.measure.sweep import baseline_job
from ioi_anti.models.loading import load_tokenizer
from ioi_anti.models.sources import check_run_models
from ioi_anti.models.spec import resolve_models
from ioi_anti.params import DataGeneration, Registry, Runtime
from ioi_anti.tasks import load_tasks, make_task_prompts, prompts

logger = logging.getLogger(__name__)


def make_prompts(
    tasks: list[str], models: list[str], registry: Registry, params: DataGeneration
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every task's prompts, built once for the whole run from words that are single tokens for all its
    models, drawn with ``data_generation.seed`` (the prompt seed: it changes the prompts and nothing
    else); and the log of the words dropped (task, list, word, tokenizer)."""
    specs = check_run_models(models, registry)
    tokenizers = {spec.model_id: load_tokenizer(spec) for spec in specs}
    table, dropped = make_task_prompts(tasks, params, tokenizers, params.seed)
    for (task, name, what), group in dropped.groupby(["task", "tokenizer", "list"], sort=False):
        logger.info("%s, tokenizer %s: dropped %d %s: %s", task, name, len(group), what, ", ".join(group["word"]))
    for task, rows in table.groupby("task", sort=False):
        logger.info("%s: %d prompts (%d clean).", task, len(rows), int((rows["role"] == "clean").sum()))
    return table, dropped[["task", "list", "word", "tokenizer"]]


def tokenise_for_models(prompts_table: pd.DataFrame, tasks: list[str], models: list[str], registry: Registry
                        ) -> dict[str, pd.DataFrame]:
    """The same prompts tokenised for every model of the run (one partition per model), each task's
    templates checked to have one token length per template."""
    tokenised = {}
    for spec in resolve_models(models, registry):
        tokens = prompts.tokenise_prompts(prompts_table, load_tokenizer(spec), spec.prepend_bos)
        for task in load_tasks(tasks):
            prompts.check_template_lengths(tokens, task.name, task.ablation_roles, spec.model_id)
        tokenised[spec.model_id] = tokens
    return tokenised


def measure_baselines(
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    done: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: Registry,
    runtime: Runtime,
) -> Results:
    """Per-prompt clean and reference metrics of every model not measured yet (each saved as it arrives)."""
    jobs = {}
    for spec in resolve_models(models, registry):
        model_prompts = model_tokens(tokenised, spec.model_id)
        for task in tasks_of(model_prompts):
            tokens = task_tokens(model_prompts, task)
            key = baseline_key(spec.model_id, tokens, runtime)
            if key in done:
                problem = baseline_problem(done[key], clean_pair_ids(tokens))
                if problem is None:
                    logger.info("Baseline of %s on %s already measured (%s): skipped.", spec.model_id, task, key)
                    continue
                logger.warning("Saved baseline %s is damaged (%s): measuring it again.", key, problem)
            jobs[key] = Job(spec.model_id, baseline_job, (spec, tokens, runtime))
    return run_jobs(jobs, runtime, "baseline")


def summarise_baselines(
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: Registry,
    runtime: Runtime,
    seed: int,
    n_boot: int,
) -> pd.DataFrame:
    """Baseline table: clean, reference, gap and accuracy per model and task, with intervals.

    A model whose gap interval does not exclude zero is flagged (``gap_ok`` False) and logged:
    its Delta values would be meaningless.
    """
    rows = []
    for spec in resolve_models(models, registry):
        table = model_baseline(baseline_partitions, spec.model_id, model_tokens(tokenised, spec.model_id), runtime)
        # tuning and quantisation are the registry's: a baseline saved before they were recorded lacks them
        for task, frame in table.assign(tuning=spec.tuning, quantisation=spec.quantisation).groupby("task", sort=False):
            rows.append(baseline_row(frame, task, seed, n_boot))
    result = pd.DataFrame(rows)
    for row in result[~result["gap_ok"]].itertuples():
        logger.warning(
            "%s: the %s gap is not clearly positive (%.3f, 95%% CI [%.3f, %.3f]); its Delta are meaningless.",
            row.model, row.task, row.gap, row.gap_low, row.gap_high,
        )
    return result
