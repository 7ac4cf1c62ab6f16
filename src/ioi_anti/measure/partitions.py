"""The head sweep's partitions on disk: the run fingerprint that names them (so a resumed run finds
finished work and a changed setting starts afresh), the keys of a model's tokens and baselines, and
the integrity checks that detect a damaged or incomplete partition before it is reused.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ioi_anti.models.loading import resolve_device
from ioi_anti.params import Runtime


def fingerprint(model_id: str, tokens: pd.DataFrame, settings: Mapping[str, Any]) -> str:
    """Short hash of what a model's measurements depend on: its prompts and the settings.

    Partition keys carry it, so a re-run reuses saved partitions only when nothing changed.
    """
    digest = hashlib.sha256()
    digest.update(model_id.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    cols = ["prompt_id", "task", "role", "pair_id", "template_id", "input_ids", "metric_token_ids", "metric_weights"]
    digest.update(tokens[cols].to_json(orient="values").encode())
    return digest.hexdigest()[:12]


def partition_prefix(model_id: str, task: str, fp: str) -> str:
    """Folder (partition key prefix) of one model's measurements of one task for one fingerprint: tasks
    are measured and saved apart, so adding a task to a finished run measures only that task."""
    return f"{model_id}__{task}__{fp}"


def task_tokens(tokens: pd.DataFrame, task: str) -> pd.DataFrame:
    """One task's rows of a model's tokenised prompts, or a clear error when the task has none."""
    rows = tokens[tokens["task"] == task]
    if rows.empty:
        raise KeyError(f"No tokenised {task} prompts: run `kedro run --pipelines data_generation` first.")
    return rows.reset_index(drop=True)


def tasks_of(tokens: pd.DataFrame) -> list[str]:
    """The tasks of a tokenised prompt table, in their order of appearance."""
    return list(dict.fromkeys(tokens["task"]))


def model_tokens(tokenised: Mapping[str, Callable[[], pd.DataFrame]], model_id: str) -> pd.DataFrame:
    """A model's tokenised prompts from the partitioned dataset, or a clear error."""
    if model_id not in tokenised:
        raise KeyError(f"No tokenised prompts for {model_id}: run `kedro run --pipelines data_generation` first.")
    return tokenised[model_id]()


def numeric_runtime(runtime: Runtime) -> dict[str, str]:
    """The runtime settings that can change a number, for resume fingerprints: the kind of device
    (CPU and CUDA kernels differ in the last bits), the dtype, and TF32 where it acts (CUDA). Batch
    sizes and the device index cannot, so lowering ``max_batch`` after running out of memory keeps
    every finished partition."""
    device = resolve_device(runtime.device).type
    tf32 = {"tf32": True} if device == "cuda" and runtime.tf32 else {}
    return {"device": device, "dtype": runtime.dtype} | tf32


def baseline_key(model_id: str, tokens: pd.DataFrame, runtime: Runtime) -> str:
    """Partition key of a model's per-prompt baseline of one task (``tokens``: that task's prompts)."""
    (task,) = tasks_of(tokens)
    return f"{partition_prefix(model_id, task, fingerprint(model_id, tokens, numeric_runtime(runtime)))}/baseline"


def clean_pair_ids(tokens: pd.DataFrame) -> dict[str, np.ndarray]:
    """The sorted pair ids of each task's clean prompts: the prompts every measurement must cover."""
    clean = tokens[tokens["role"] == "clean"]
    return {task: np.sort(clean.loc[clean["task"] == task, "pair_id"].to_numpy()) for task in tasks_of(tokens)}


def partition_problem(load: Callable[[], pd.DataFrame], layers: Sequence[int], n_heads: int,
                      pair_ids: Mapping[str, np.ndarray], every_head: bool) -> str | None:
    """What is wrong with a saved sweep partition (None when it is whole), checked before it is reused.

    It must be readable and hold, for each task, every prompt exactly once for each head it has, in
    ``layers`` only; with ``every_head`` every head of those layers (a screening run may measure fewer).
    """
    try:
        frame = load()
    except Exception as error:  # noqa: BLE001 - any failure to read means the file cannot be trusted
        return f"unreadable ({type(error).__name__}: {error})"
    grid = {(layer, head) for layer in layers for head in range(n_heads)}
    for task, ids in pair_ids.items():
        rows = frame[frame["task"] == task]
        found = set(zip(rows["layer"], rows["head"], strict=True))
        if not found <= grid or (every_head and found != grid):
            return f"{task}: {len(found & grid)} of {len(grid)} heads, {len(found - grid)} outside the grid"
        for (layer, head), group in rows.groupby(["layer", "head"]):
            if not np.array_equal(np.sort(group["pair_id"].to_numpy()), ids):
                return f"{task}: L{layer}H{head} holds {len(group)} rows for {len(ids)} prompts"
    return None


def baseline_problem(load: Callable[[], pd.DataFrame], pair_ids: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with a saved per-prompt baseline (None when it is whole): readable, every prompt once."""
    try:
        frame = load()
    except Exception as error:  # noqa: BLE001 - any failure to read means the file cannot be trusted
        return f"unreadable ({type(error).__name__}: {error})"
    for task, ids in pair_ids.items():
        if not np.array_equal(np.sort(frame.loc[frame["task"] == task, "pair_id"].to_numpy()), ids):
            return f"{task}: {int((frame['task'] == task).sum())} rows for {len(ids)} prompts"
    return None


def task_baseline(baseline_partitions: Mapping[str, Callable[[], pd.DataFrame]], model_id: str,
                  tokens: pd.DataFrame, runtime: Runtime) -> pd.DataFrame:
    """A model's saved per-prompt baseline of one task (``tokens``: that task's prompts), or a clear error."""
    key = baseline_key(model_id, tokens, runtime)
    if key not in baseline_partitions:
        raise KeyError(f"Baseline of {model_id} on {tokens['task'].iloc[0]} is missing ({key}): run "
                       "`kedro run --pipelines data_generation`.")
    return baseline_partitions[key]()


def model_baseline(baseline_partitions: Mapping[str, Callable[[], pd.DataFrame]], model_id: str,
                   tokens: pd.DataFrame, runtime: Runtime) -> pd.DataFrame:
    """A model's per-prompt baseline of every task of its tokenised prompts (each task saved apart)."""
    return pd.concat([task_baseline(baseline_partitions, model_id, task_tokens(tokens, task), runtime)
                      for task in tasks_of(tokens)], ignore_index=True)
