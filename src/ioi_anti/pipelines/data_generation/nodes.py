"""Nodes of the data_generation pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from ioi_anti import prompts
from ioi_anti.checkpoints import parse_model_id
from ioi_anti.execution import Job, Results, run_jobs
from ioi_anti.metrics import bootstrap_indices, bootstrap_mean
from ioi_anti.models import load_tokenizer
from ioi_anti.run_models import check_run_models, resolve_models
from ioi_anti.sweep import baseline_job, baseline_key, baseline_problem, clean_pair_ids, model_tokens

logger = logging.getLogger(__name__)


def build_vocabulary(
    models: list[str], registry: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Check the run's models, then keep the words that are single tokens for all of them."""
    specs = check_run_models(models, registry)
    tokenizers = {spec.model_id: load_tokenizer(spec) for spec in specs}
    return prompts.build_vocabulary(params, tokenizers)


def make_ioi_prompts(vocabulary: dict[str, Any], params: dict[str, Any]) -> pd.DataFrame:
    """IOI prompts (BABA and ABBA), their ABC references and the mean-ablation pool, drawn with
    ``data_generation.seed`` (the prompt seed: it changes the prompts and nothing else)."""
    return prompts.make_ioi_dataset(vocabulary, params, int(params["seed"]))


def make_anti_prompts(vocabulary: dict[str, Any], params: dict[str, Any]) -> pd.DataFrame:
    """Non-copy list prompts, their matched copy prompts and the mean-ablation pool (``data_generation.seed``)."""
    return prompts.make_anti_dataset(vocabulary, params, int(params["seed"]))


def tokenise_for_models(
    ioi_prompts: pd.DataFrame, anti_prompts: pd.DataFrame, models: list[str], registry: dict[str, Any]
) -> dict[str, pd.DataFrame]:
    """The same prompts tokenised for every model of the run (one partition per model)."""
    table = pd.concat([ioi_prompts, anti_prompts], ignore_index=True)  # prompt_id is unique per task
    return {
        spec.model_id: prompts.tokenise_prompts(table, load_tokenizer(spec), spec.prepend_bos)
        for spec in resolve_models(models, registry)
    }


def measure_baselines(
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    done: dict[str, Any],
    models: list[str],
    registry: dict[str, Any],
    runtime: dict[str, Any],
) -> Results:
    """Per-prompt clean and reference metrics of every model not measured yet (each saved as it arrives)."""
    jobs = {}
    for spec in resolve_models(models, registry):
        tokens = model_tokens(tokenised, spec.model_id)
        key = baseline_key(spec.model_id, tokens, runtime)
        if key in done:
            problem = baseline_problem(done[key], clean_pair_ids(tokens))
            if problem is None:
                logger.info("Baseline of %s already measured (%s): skipped.", spec.model_id, key)
                continue
            logger.warning("Saved baseline %s is damaged (%s): measuring it again.", key, problem)
        jobs[key] = Job(spec.model_id, baseline_job, (spec, tokens, runtime))
    return run_jobs(jobs, runtime, "baseline")


def summarise_baselines(
    baseline_partitions: dict[str, Callable[[], pd.DataFrame]],
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: dict[str, Any],
    runtime: dict[str, Any],
    seed: int,
    n_boot: int,
) -> pd.DataFrame:
    """Baseline table: clean, reference, gap and accuracy per model and task, with intervals.

    A model whose gap interval does not exclude zero is flagged (``gap_ok`` False) and logged:
    its Delta values would be meaningless.
    """
    rows = []
    for spec in resolve_models(models, registry):
        key = baseline_key(spec.model_id, model_tokens(tokenised, spec.model_id), runtime)
        if key not in baseline_partitions:
            raise KeyError(f"Baseline of {spec.model_id} is missing ({key}): re-run data_generation.")
        # tuning is the registry's: a baseline saved before it was recorded lacks the column
        table = baseline_partitions[key]().assign(tuning=spec.tuning)
        for task, frame in table.groupby("task", sort=False):
            rows.append(baseline_row(frame, task, seed, n_boot))
    result = pd.DataFrame(rows)
    for row in result[~result["gap_ok"]].itertuples():
        logger.warning(
            "%s: the %s gap is not clearly positive (%.3f, 95%% CI [%.3f, %.3f]); its Delta are meaningless.",
            row.model, row.task, row.gap, row.gap_low, row.gap_high,
        )
    return result


def baseline_row(frame: pd.DataFrame, task: str, seed: int, n_boot: int) -> dict[str, Any]:
    """One baseline row: means with percentile bootstrap intervals over paired prompts."""
    idx = bootstrap_indices(len(frame), n_boot, seed)
    first = frame.iloc[0]
    checkpoint = parse_model_id(str(first["model_id"]))
    row: dict[str, Any] = {"model": first["model_id"], "checkpoint": checkpoint.label,
                           "training_step": checkpoint.training_step, "family": first["family"],
                           "tuning": first["tuning"], "n_params": int(first["n_params"]), "task": task,
                           "n_prompts": len(frame)}
    series = {
        "clean": frame["m_clean"].to_numpy(), "ref": frame["m_ref"].to_numpy(),
        "gap": (frame["m_clean"] - frame["m_ref"]).to_numpy(), "accuracy": frame["correct_clean"].to_numpy(float),
    }
    for name, values in series.items():
        mean, low, high = bootstrap_mean(values, idx)
        prefix = {"clean": "clean_metric", "ref": "ref_metric"}.get(name, name)
        row[prefix] = mean
        base = prefix.removesuffix("_metric")
        row[f"{base}_low"], row[f"{base}_high"] = low, high
    row["gap_ok"] = bool(row["gap_low"] > 0)
    return row
