"""Per-model measurement jobs: baseline behaviour, the exact head sweep and attribution
patching, each returning tidy per-prompt tables.

Two sweep modes: ``exact`` measures every head exactly; ``screen`` estimates every head by
attribution patching (one forward and backward pass per prompt group) and measures exactly, task by
task, only the heads whose estimate for that task could reach the smallest τ of the run
(:func:`screen_selection`).

Pipelines hand these jobs to a partitioned dataset as lazy callables, so each model (and each
layer of the head sweep) is computed and saved one at a time.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ioi_anti.execution import resident
from ioi_anti.measure.ablation import (
    AblationValues,
    CleanPass,
    ablated_layer_metrics,
    attribution_metrics,
    candidate_logits,
    clean_pass,
    make_groups,
)
from ioi_anti.measure.partitions import task_tokens, tasks_of
from ioi_anti.models.loading import LoadedModel, load_run_model
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import Runtime
from ioi_anti.tasks import HeadScorer, load_task

logger = logging.getLogger(__name__)


def model_facts(lm: LoadedModel) -> dict[str, Any]:
    """Columns every per-model table carries, from the loaded model's config."""
    keep = ("model_id", "base_model", "checkpoint", "training_step", "family", "tuning", "quantisation", "n_params",
            "n_layers", "n_heads")
    return {k: v for k, v in lm.describe().items() if k in keep}


def baseline_table(lm: LoadedModel, tokens: pd.DataFrame, max_batch: int) -> pd.DataFrame:
    """Per paired prompt of each task of ``tokens``: clean and reference metric, and whether the clean
    answer is right."""
    if tokens.empty:
        raise ValueError(f"No prompts for {lm.spec.model_id}: the prompt set is empty.")
    frames = []
    for task in tasks_of(tokens):
        rows_of_task = tokens[tokens["task"] == task]
        per_role = {}
        for role in ("clean", "ref"):
            rows = rows_of_task[rows_of_task["role"] == role].set_index("prompt_id")
            ids, metric, correct = candidate_logits(lm, make_groups(rows.reset_index(), lm.device, max_batch))
            per_role[role] = pd.DataFrame({"pair_id": rows.loc[ids, "pair_id"].to_numpy(), f"m_{role}": metric,
                                           f"correct_{role}": correct})
        merged = per_role["clean"].merge(per_role["ref"], on="pair_id", validate="one_to_one")
        frames.append(merged.assign(task=task))
    return pd.concat(frames, ignore_index=True).assign(**model_facts(lm))


@dataclass(frozen=True)
class Screen:
    """Which heads a screening sweep measures exactly, per task (see docs/metrics.md, "Screening").

    A head is measured exactly on a task's prompts when its estimated |Δ| for that task is at least
    ``tau_min - margin``, or when it is among the ``top_k`` largest estimates of that task.
    """

    tau_min: float
    margin: float
    top_k: int

    def __post_init__(self) -> None:
        if not 0 <= self.margin < self.tau_min:
            raise ValueError(f"head_ablation.screen.margin must lie in [0, tau_min = {self.tau_min}); "
                             f"got {self.margin}.")
        if self.top_k < 0:
            raise ValueError(f"head_ablation.screen.top_k must be >= 0; got {self.top_k}.")


def task_gaps(baseline: pd.DataFrame) -> dict[str, float]:
    """Mean task gap (clean minus reference metric) per task, from a model's per-prompt baseline."""
    return (baseline["m_clean"] - baseline["m_ref"]).groupby(baseline["task"]).mean().to_dict()


def estimated_deltas(attribution: pd.DataFrame, gaps: Mapping[str, float]) -> pd.DataFrame:
    """Estimated Δ per task and head: the mean attribution effect over prompts over the task gap."""
    mean = attribution.groupby(["task", "layer", "head"], as_index=False)["effect"].mean()
    return mean.assign(estimate=mean["effect"] / mean["task"].map(gaps))


Selection = dict[str, list[tuple[int, int]]]


"""Per task, the (layer, head) pairs measured exactly on that task's prompts."""


def screen_selection(estimates: pd.DataFrame, screen: Screen) -> Selection:
    """The heads a screening sweep measures exactly, task by task.

    Per task, not per head: a head whose estimate could reach τ for one task only is measured on
    that task's prompts only, since its other estimate already rules it out for the other task (the
    same argument that leaves unselected heads estimated).
    """
    picked: Selection = {}
    for task in dict.fromkeys(estimates["task"]):
        frame = estimates[estimates["task"] == task]
        size = frame["estimate"].abs()
        chosen = frame[(size >= screen.tau_min - screen.margin) | frame.index.isin(size.nlargest(screen.top_k).index)]
        picked[task] = sorted(zip(chosen["layer"].astype(int), chosen["head"].astype(int), strict=True))
    return picked


def heads_in_layer(selection: Selection, layer: int) -> dict[str, list[int]]:
    """Per task, the heads of ``layer`` in a selection (what one layer's job of a screening sweep measures)."""
    return {task: [head for lay, head in heads if lay == layer] for task, heads in selection.items()}


@dataclass
class TaskState:
    """One task's clean passes (with block inputs) and ablation values, ready for the sweep."""

    task: str
    clean: list[CleanPass]
    values: list[torch.Tensor]


class ModelSweep:
    """Exact head sweep and attribution patching of one model, computed lazily layer by layer."""

    def __init__(self, spec: ModelSpec, tokens: pd.DataFrame, runtime: Runtime, ablation: str, seed: int,
                 saved_attribution: pd.DataFrame | None = None,
                 screening: tuple[Mapping[str, float], Screen] | None = None, lm: LoadedModel | None = None,
                 roles: Mapping[str, Sequence[str]] | None = None,
                 scores: Mapping[str, HeadScorer] | None = None) -> None:
        """``tokens``: the prompts of the tasks swept. ``roles``: per task, the prompt roles its ablation
        values come from (:attr:`ioi_anti.tasks.Task.ablation_roles`; by default those of the built-in
        tasks of ``tokens``). ``lm``: a model already loaded (a benchmark's random-weight stand-in); by
        default the registry model is loaded when first needed, in the process that computes. ``scores``: per
        task, the per-head measurement it reports beside Δ (:attr:`ioi_anti.tasks.Task.score`), if any."""
        self.spec, self.tokens, self.runtime, self.ablation, self.seed = spec, tokens, runtime, ablation, seed
        self.roles = dict(roles) if roles is not None else {
            task: load_task(task).ablation_roles for task in tasks_of(tokens)}
        self.scores = dict(scores or {})
        self.saved_attribution, self.screening = saved_attribution, screening
        self.given_lm = lm

    @functools.cached_property
    def attribution(self) -> pd.DataFrame:
        """The attribution estimates: the saved partition on a resumed run, else computed now."""
        return self.saved_attribution if self.saved_attribution is not None else self.attribution_effects()

    def selected_heads(self, gaps: Mapping[str, float], screen: Screen) -> Selection:
        """Heads a screening sweep measures exactly, per task (from the attribution estimates)."""
        return screen_selection(estimated_deltas(self.attribution, gaps), screen)

    @functools.cached_property
    def selection(self) -> Selection | None:
        """The heads this sweep measures exactly, per task (None: every head), computed and logged once."""
        if self.screening is None:
            return None
        selected = self.selected_heads(*self.screening)
        logger.info("%s: screening selected %s of %d heads for exact measurement.", self.spec.model_id,
                    " and ".join(f"{len(heads)} ({task})" for task, heads in selected.items()),
                    self.lm.n_layers * self.lm.n_heads)
        return selected

    def job(self, key: str) -> pd.DataFrame:
        """The partition ``key`` of this sweep: ``.../attribution``, ``.../score`` or ``.../layer_<L>``."""
        if key.endswith("/attribution"):
            return self.attribution
        if key.endswith("/score"):
            return self.head_scores()
        layer = int(key.rsplit("_", 1)[1])
        return self.layer_effects(layer, None if self.selection is None else heads_in_layer(self.selection, layer))

    @property
    def lm(self) -> LoadedModel:
        """The model, from the process's model cache each time: the sweep holds no reference to it, so
        the cache can release it once another model is asked for (a sweep object outlives its step's
        jobs for the whole step)."""
        return self.given_lm if self.given_lm is not None else load_run_model(self.spec, self.runtime)

    @functools.cached_property
    def states(self) -> list[TaskState]:
        states = []
        for task, roles in self.roles.items():
            rows = task_tokens(self.tokens, task)
            batch = self.runtime.max_batch
            pool = make_groups(rows[rows["role"].isin(roles)], self.lm.device, batch)
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

    def layer_effects(self, layer: int, heads: Mapping[str, Sequence[int]] | None = None) -> pd.DataFrame:
        """Exact effect (ablated minus clean metric) of each head of ``layer`` on every prompt of each
        task (or, with ``heads``, of the heads it lists for each task only)."""
        frames = [pd.DataFrame(columns=["task", "layer", "head", "pair_id", "effect", "method"])]
        todo = {task: list(range(self.lm.n_heads)) if heads is None else list(heads.get(task, []))
                for task in self.roles}
        for state in self.states if any(todo.values()) else []:
            heads_of_task = todo[state.task]
            if not heads_of_task:
                continue
            per_group = []
            for cp, values in zip(state.clean, state.values, strict=True):
                ablated = ablated_layer_metrics(self.lm, cp, values[layer], layer, self.runtime.max_rows,
                                                heads_of_task)
                per_group.append((ablated - cp.metric).float().cpu().numpy()[None])
            frame = self._tidy(state, lambda _: layer, per_group, "exact")
            frames.append(frame.assign(head=np.asarray(heads_of_task)[frame["head"].to_numpy()]))
        return pd.concat(frames, ignore_index=True).astype({"layer": int, "head": int, "pair_id": int,
                                                            "effect": "float32"}).assign(model_id=self.spec.model_id)

    def attribution_effects(self) -> pd.DataFrame:
        """Attribution-patching estimate of every head's effect on every prompt."""
        frames = []
        for state in self.states:
            per_group = [attribution_metrics(self.lm, cp.group, values).float().cpu().numpy()
                         for cp, values in zip(state.clean, state.values, strict=True)]
            frames.append(self._tidy(state, lambda i: i, per_group, "attribution"))
        return pd.concat(frames, ignore_index=True).assign(model_id=self.spec.model_id)

    def head_scores(self) -> pd.DataFrame:
        """Each task's own per-head measurement on its clean prompts (rows with ``method`` "score")."""
        frames = [scorer(self.lm, task_tokens(self.tokens, task), self.runtime.max_batch)
                  .rename(columns={"score": "effect"}).assign(task=task, method="score")
                  for task, scorer in self.scores.items()]
        return pd.concat(frames, ignore_index=True).astype({"layer": int, "head": int, "pair_id": int}).assign(
            model_id=self.spec.model_id)

    def close(self) -> None:
        """Release the clean passes once the model is done."""
        self.__dict__.pop("states", None)


def sweep_job(sweep: ModelSweep, key: str) -> pd.DataFrame:
    """The partition ``key`` (``<prefix>/<part>``) of a model's sweep, computed on the sweep this process
    keeps for that prefix, so the model's clean passes are computed once per process, not once per layer."""
    return resident(key.rsplit("/", 1)[0], sweep).job(key)


def baseline_job(spec: ModelSpec, tokens: pd.DataFrame, runtime: Runtime) -> pd.DataFrame:
    """A model's per-prompt baseline (a job of :mod:`ioi_anti.execution`)."""
    lm = load_run_model(spec, runtime)
    return baseline_table(lm, tokens, runtime.max_batch)
