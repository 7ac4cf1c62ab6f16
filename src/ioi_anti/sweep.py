"""Per-model measurement jobs: baseline behaviour, the exact head sweep and attribution
patching, each returning tidy per-prompt tables, plus the run fingerprint used to resume.

Pipelines hand these jobs to a partitioned dataset as lazy callables, so each model (and each
layer of the head sweep) is computed and saved one at a time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ioi_anti.ablation import (
    REFERENCE_ROLES,
    AblationValues,
    CleanPass,
    ablated_layer_metrics,
    attribution_metrics,
    candidate_logits,
    clean_pass,
    make_groups,
)
from ioi_anti.models import LoadedModel, ModelSpec, load_model

logger = logging.getLogger(__name__)

TASKS = ("ioi", "anti")


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


def partition_prefix(model_id: str, fp: str) -> str:
    """Folder (partition key prefix) of one model's measurements for one fingerprint."""
    return f"{model_id}__{fp}"


def model_tokens(tokenised: Mapping[str, Callable[[], pd.DataFrame]], model_id: str) -> pd.DataFrame:
    """A model's tokenised prompts from the partitioned dataset, or a clear error."""
    if model_id not in tokenised:
        raise KeyError(f"No tokenised prompts for {model_id}: run `kedro run --pipeline data_generation` first.")
    return tokenised[model_id]()


def baseline_key(model_id: str, tokens: pd.DataFrame, runtime: Mapping[str, Any]) -> str:
    """Partition key of a model's per-prompt baseline."""
    return f"{partition_prefix(model_id, fingerprint(model_id, tokens, runtime))}/baseline"


def model_facts(lm: LoadedModel) -> dict[str, Any]:
    """Columns every per-model table carries, from the loaded model's config."""
    return {k: v for k, v in lm.describe().items() if k in ("model_id", "family", "n_params", "n_layers", "n_heads")}


def baseline_table(lm: LoadedModel, tokens: pd.DataFrame, max_batch: int) -> pd.DataFrame:
    """Per paired prompt: clean and reference metric, and whether the clean answer is right."""
    frames = []
    for task in TASKS:
        task_tokens = tokens[tokens["task"] == task]
        if task_tokens.empty:
            raise ValueError(f"No {task} prompts for {lm.spec.model_id}: the prompt set is empty.")
        per_role = {}
        for role in ("clean", "ref"):
            rows = task_tokens[task_tokens["role"] == role].set_index("prompt_id")
            ids, metric, correct = candidate_logits(lm, make_groups(rows.reset_index(), lm.device, max_batch))
            per_role[role] = pd.DataFrame({"pair_id": rows.loc[ids, "pair_id"].to_numpy(), f"m_{role}": metric,
                                           f"correct_{role}": correct})
        merged = per_role["clean"].merge(per_role["ref"], on="pair_id", validate="one_to_one")
        frames.append(merged.assign(task=task))
    return pd.concat(frames, ignore_index=True).assign(**model_facts(lm))


@dataclass
class TaskState:
    """One task's clean passes (with block inputs) and ablation values, ready for the sweep."""

    task: str
    clean: list[CleanPass]
    values: list[torch.Tensor]


class ModelSweep:
    """Exact head sweep and attribution patching of one model, computed lazily layer by layer."""

    def __init__(self, spec: ModelSpec, tokens: pd.DataFrame, runtime: Mapping[str, Any],
                 ablation: str, seed: int) -> None:
        self.spec, self.tokens, self.runtime, self.ablation, self.seed = spec, tokens, runtime, ablation, seed

    @functools.cached_property
    def lm(self) -> LoadedModel:
        return load_model(self.spec, self.runtime["device"], self.runtime["dtype"])

    @functools.cached_property
    def states(self) -> list[TaskState]:
        states = []
        for task in TASKS:
            rows = self.tokens[self.tokens["task"] == task]
            batch = self.runtime["max_batch"]
            pool = make_groups(rows[rows["role"].isin(REFERENCE_ROLES[task])], self.lm.device, batch)
            values = AblationValues(self.ablation, self.lm, pool, self.seed)
            groups = make_groups(rows[rows["role"] == "clean"], self.lm.device, batch)
            clean = [clean_pass(self.lm, g, keep_resid=True, keep_z=False) for g in groups]
            states.append(TaskState(task=task, clean=clean, values=[values.for_group(g) for g in groups]))
        return states

    def _tidy(self, task_state: TaskState, layer_of: Callable[[int], int], per_group: list[np.ndarray],
              method: str) -> pd.DataFrame:
        """Rows (task, layer, head, pair_id, effect) from per-group effect arrays [..., head, b]."""
        frames = []
        for cp, eff in zip(task_state.clean, per_group, strict=True):
            layers, heads, prompts = np.meshgrid(
                np.arange(eff.shape[0]), np.arange(eff.shape[1]), np.arange(eff.shape[2]), indexing="ij"
            )
            frames.append(pd.DataFrame({
                "task": task_state.task, "layer": [layer_of(i) for i in layers.ravel()],
                "head": heads.ravel(), "pair_id": cp.group.pair_ids[prompts.ravel()], "effect": eff.ravel(),
                "method": method,
            }))
        return pd.concat(frames, ignore_index=True)

    def layer_effects(self, layer: int) -> pd.DataFrame:
        """Exact effect (ablated minus clean metric) of each head of ``layer`` on every prompt."""
        frames = []
        for state in self.states:
            per_group = []
            for cp, values in zip(state.clean, state.values, strict=True):
                ablated = ablated_layer_metrics(self.lm, cp, values[layer], layer, self.runtime["max_rows"])
                per_group.append((ablated - cp.metric).float().cpu().numpy()[None])
            frames.append(self._tidy(state, lambda _: layer, per_group, "exact"))
        return pd.concat(frames, ignore_index=True).assign(model_id=self.spec.model_id)

    def attribution_effects(self) -> pd.DataFrame:
        """Attribution-patching estimate of every head's effect on every prompt."""
        frames = []
        for state in self.states:
            per_group = [attribution_metrics(self.lm, cp.group, values).float().cpu().numpy()
                         for cp, values in zip(state.clean, state.values, strict=True)]
            frames.append(self._tidy(state, lambda i: i, per_group, "attribution"))
        return pd.concat(frames, ignore_index=True).assign(model_id=self.spec.model_id)

    def close(self) -> None:
        """Release the clean passes once the model is done."""
        self.__dict__.pop("states", None)
