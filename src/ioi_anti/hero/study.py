"""The study of a model's hero heads: which heads are heroes (the strongest robust heads of each
category, plus those named in config), and their case studies on both tasks of the pair — dose
response, cumulative top-k ablation, path patching, attention, and the decomposition of each hero's
effect over its first readers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ioi_anti.analysis.categories import WEAK, Pair, categorise, run_pair
from ioi_anti.execution import Job, run_jobs
from ioi_anti.hero import effects as hero
from ioi_anti.hero import routes
from ioi_anti.measure.ablation import variant_metrics
from ioi_anti.measure.metrics import bootstrap_indices, delta_divisors, interval
from ioi_anti.measure.partitions import model_tokens
from ioi_anti.models.loading import LoadedModel, load_run_model
from ioi_anti.models.spec import ModelSpec, resolve_models
from ioi_anti.params import HeadAblation, HeroHeads, Registry, Runtime

STUDY_COLUMNS = {
    "dose": ["task", "alpha", "delta", "delta_low", "delta_high", "hero", "model"],
    "topk": ["task", "category", "k", "heads", "delta", "delta_low", "delta_high", "model"],
    "paths": ["task", "path", "receiver_layer", "receiver_head", "receiver_input", "receiver_category", "delta",
              "delta_low", "delta_high", "hero", "model"],
    "attention": ["task", "target", "mean", "std", "count", "hero", "model"],
    "decomposition": ["task", "level", "part", "reader", "reader_layer", "heads", "delta", "delta_low", "delta_high",
                      "fraction", "fraction_low", "fraction_high", "hero", "model"],
}

logger = logging.getLogger(__name__)


MODEL_COLUMNS = ["model", "family", "tuning", "quantisation", "n_params", "layer", "head"]


def _strength(frame: pd.DataFrame, category: str, pair: Pair) -> pd.Series:
    """How strongly a head plays its category's role (the weaker task for shared heads)."""
    x, y = (frame[f"delta_{name}"].abs() for name in pair.names)
    x_only, y_only, _shared, _weak = pair.categories
    return {x_only: x, y_only: y}.get(category, np.minimum(x, y))


def select_heroes(per_head: pd.DataFrame, tau: float, params: HeroHeads, tasks: list[str],
                  pair: list[str]) -> pd.DataFrame:
    """Per model: the strongest robust heads of each category of the run's pair, plus the heads named in
    config, with their Δ on every task of the run."""
    run = run_pair(tasks, pair)
    heads = categorise(per_head, tau, run)
    rows = []
    for model, frame in heads.groupby("model", sort=False):
        for category in run.strong_categories:
            robust = frame[frame["category_robust"] == category]
            top = robust.assign(strength=_strength(robust, category, run)).nlargest(params.top_per_category, "strength")
            rows += [r | {"selected_by": "auto"} for r in top.to_dict("records")]
        grid = (int(frame["n_layers"].iloc[0]), int(frame["n_heads"].iloc[0]))
        hero.check_named_heads(params.named, {model: grid})
        for label in params.named.get(model, []):
            layer, head = hero.parse_head(label)
            match = frame[(frame["layer"] == layer) & (frame["head"] == head)]
            rows.append(match.iloc[0].to_dict() | {"selected_by": "named"})
    others = [c for c in per_head.columns if (c.startswith("delta_") and c not in run.columns)
              or c.endswith("_score")]  # every task of the run beside the pair's, and their own scores
    columns = [*MODEL_COLUMNS, *run.columns, *others, "category", "category_robust", "selected_by"]
    result = pd.DataFrame(rows, columns=columns).drop_duplicates(["model", "layer", "head"])
    result.insert(result.columns.get_loc("layer"), "hero", [f"L{r.layer}H{r.head}" for r in result.itertuples()])
    return result.reset_index(drop=True)


def _summary(deltas: np.ndarray, idx_seed: int, n_boot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over prompts (last axis) with a percentile bootstrap interval."""
    idx = bootstrap_indices(deltas.shape[-1], n_boot, idx_seed)
    low, high = interval(deltas[..., idx].mean(-1))
    return deltas.mean(-1), low, high


def study_heroes(
    heroes: pd.DataFrame,
    per_head: pd.DataFrame,
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: Registry,
    runtime: Runtime,
    ablation_params: HeadAblation,
    tau: float,
    params: HeroHeads,
    seed: int,
    tasks: list[str],
    pair: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Dose-response curves, cumulative top-k ablation, path patching, attention and the decomposition
    of each hero's effect over its first readers, on both tasks of the run's pair, per model (one job per
    model, run where ``runtime.cluster`` says)."""
    run = run_pair(tasks, pair)
    jobs = {}
    for spec in resolve_models(models, registry):
        model_heroes = heroes[heroes["model"] == spec.model_id]
        if model_heroes.empty:
            logger.warning("%s: no hero heads (no head's interval clears tau): nothing to study.", spec.model_id)
            continue
        jobs[spec.model_id] = Job(spec.model_id, study_model, (
            spec, model_heroes, per_head[per_head["model"] == spec.model_id], model_tokens(tokenised, spec.model_id),
            runtime, ablation_params, params, tau, seed, run))
    studies = dict(run_jobs(jobs, runtime, "hero heads").arrivals())
    dose, topk, paths, attention, decomposition = (
        pd.concat([pd.DataFrame(columns=STUDY_COLUMNS[name]), *(studies[model][name] for model in jobs)],
                  ignore_index=True)[STUDY_COLUMNS[name]]
        for name in STUDY_COLUMNS
    )
    return dose, topk, paths, attention, decomposition


def hero_divisor(model_heads: pd.DataFrame, task: str) -> float:
    """What the hero studies divide a task's effects by: its gap, or 1 where the run's Δ is raw."""
    gap, unit = model_heads[f"gap_{task}"].to_numpy(float)[:1], str(model_heads["delta_unit"].iloc[0])
    return float(delta_divisors(gap, unit)[0])


def study_model(spec: ModelSpec, model_heroes: pd.DataFrame, model_heads: pd.DataFrame, tokens: pd.DataFrame,
                runtime: Runtime, ablation_params: HeadAblation, params: HeroHeads, tau: float,
                seed: int, pair: Pair) -> dict[str, pd.DataFrame]:
    """Every case study of one model's hero heads, by study name (a job of :mod:`ioi_anti.execution`)."""
    lm = load_run_model(spec, runtime)
    tasks = {task.name: hero.prepare_hero_task(
        lm, tokens, task.name, task.ablation_roles, ablation_params.ablation, ablation_params.seed,
        hero_divisor(model_heads, task.name), params.max_prompts, runtime.max_batch)
        for task in pair.tasks}
    study = ModelStudy(lm, tasks, params, tau, seed, pair)
    model = {"model": spec.model_id}
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in STUDY_COLUMNS}
    for row in tqdm(list(model_heroes.itertuples()), desc=f"{spec.model_id} hero heads", unit="head"):
        hero_id = {"hero": row.hero, **model}
        tables["dose"].append(study.dose(row.layer, row.head).assign(**hero_id))
        tables["paths"].append(study.paths(row.layer, row.head, model_heads).assign(**hero_id))
        tables["attention"].append(study.attention(row.layer, row.head).assign(**hero_id))
        tables["decomposition"].append(study.decomposition(row.layer, row.head, model_heads).assign(**hero_id))
    tables["topk"].append(study.topk(model_heads).assign(**model))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}


class ModelStudy:
    """Case studies of one model's hero heads on both tasks of the pair, as tidy tables of Delta."""

    def __init__(self, lm: LoadedModel, tasks: dict[str, hero.HeroTask], params: HeroHeads, tau: float, seed: int,
                 pair: Pair) -> None:
        self.lm, self.tasks, self.params, self.tau, self.seed, self.pair = lm, tasks, params, tau, seed, pair
        self._effects: dict[tuple[int, int, str], tuple[dict[int, Tensor], np.ndarray]] = {}

    def _effect(self, layer: int, head: int, task: str) -> tuple[dict[int, Tensor], np.ndarray]:
        """The hero's contribution per prompt group and its per-prompt total Δ, computed once per hero and task."""
        key = (layer, head, task)
        if key not in self._effects:
            ht = self.tasks[task]
            contributions = {id(cp): hero.contribution(self.lm, cp, layer, head, v[layer][:, :, head])
                             for cp, v in zip(ht.clean, ht.values, strict=True)}
            total = ht.deltas(lambda cp, v: variant_metrics(self.lm, cp, layer, [(head, v[layer][:, :, head])])[0])
            self._effects[key] = contributions, total
        return self._effects[key]

    def _rows(self, task: str, deltas: np.ndarray, **columns: Any) -> pd.DataFrame:
        mean, low, high = _summary(deltas, self.seed, self.params.n_boot)
        return pd.DataFrame({"task": task, **columns, "delta": mean, "delta_low": low, "delta_high": high})

    def dose(self, layer: int, head: int) -> pd.DataFrame:
        """Both metrics as the head's z moves step by step from clean to its ablation value."""
        alphas = np.linspace(0.0, 1.0, self.params.dose_steps)
        frames = []
        for task, ht in self.tasks.items():
            deltas = ht.deltas(lambda cp, v: hero.dose_response(
                self.lm, cp, layer, head, cp.z[layer][:, :, head], v[layer][:, :, head], alphas))
            frames.append(self._rows(task, deltas, alpha=alphas))
        return pd.concat(frames, ignore_index=True)

    def paths(self, layer: int, head: int, heads: pd.DataFrame) -> pd.DataFrame:
        """Total, direct, all-paths and per-receiver (q/k/v of a downstream head) effects."""
        receivers = _receivers(heads, layer, self.params, self.tau, self.pair)
        frames = []
        for task, ht in self.tasks.items():
            contributions, total = self._effect(layer, head, task)

            def contribution(cp: Any, v: Any, contributions: dict = contributions) -> Any:
                return contributions[id(cp)]
            direct = ht.deltas(lambda cp, v: hero.direct_metric(self.lm, cp, contribution(cp, v)))
            every = ht.deltas(lambda cp, v: hero.all_paths_metric(self.lm, cp, layer, contribution(cp, v)))
            frames.append(self._rows(task, np.stack([total, direct, every]), path=["total", "direct", "all paths"],
                                     receiver_layer=-1, receiver_head=-1, receiver_input="", receiver_category=""))
            for r_layer, r_heads in receivers.groupby("layer"):
                hs = r_heads["head"].tolist()
                keys = [(h, kind) for h in hs for kind in hero.QKV]

                def via(cp: Any, v: Any, r_layer: int = int(r_layer), hs: list[int] = hs, keys: list = keys) -> Any:
                    metrics = hero.receiver_metrics(self.lm, cp, contribution(cp, v), r_layer, hs)
                    return torch.stack([metrics[key] for key in keys])

                category = dict(zip(r_heads["head"], r_heads["category"], strict=True))
                frames.append(self._rows(
                    task, ht.deltas(via), path=[f"L{r_layer}H{h}.{k}" for h, k in keys],
                    receiver_layer=int(r_layer), receiver_head=[h for h, _ in keys],
                    receiver_input=[k for _, k in keys], receiver_category=[category[h] for h, _ in keys]))
        return pd.concat(frames, ignore_index=True)

    def decomposition(self, layer: int, head: int, heads: pd.DataFrame) -> pd.DataFrame:
        """The hero's total Δ split over its first readers (per layer and summed into routes) and the remainder."""
        categorised = categorise(heads, self.tau, self.pair)
        later = categorised[categorised["layer"] > layer]
        groups = {category: list(zip(frame["layer"], frame["head"], strict=True))
                  for category, frame in later.groupby("category", sort=False)}
        frames = []
        for task, ht in self.tasks.items():
            contributions, total = self._effect(layer, head, task)
            readers: list[hero.ReaderPart] = []  # the same list of readers for every prompt group

            def parts(cp: Any, v: Any, contributions: dict = contributions, readers: list = readers) -> Tensor:
                readers[:] = hero.decompose(self.lm, cp, layer, contributions[id(cp)], groups)
                return torch.stack([part.metric for part in readers])
            per_prompt = ht.deltas(parts)
            layer_parts = pd.DataFrame([{"reader": p.reader, "reader_layer": p.layer, "heads": p.heads}
                                        for p in readers[1:]])
            labels = [routes.part_label(p.reader, p.layer, p.heads) for p in readers[1:]]
            idx = bootstrap_indices(len(total), self.params.n_boot, self.seed)
            route_deltas = routes.route_parts(layer_parts, per_prompt[1:], per_prompt[0], total, self.pair)
            no_reader = {"reader": "", "reader_layer": -1, "heads": ""}
            frames += [
                routes.summarise({"total": total}, total, idx).assign(task=task, level="total", **no_reader),
                routes.summarise(route_deltas, total, idx).assign(task=task, level="route", **no_reader),
                pd.concat([routes.summarise(dict(zip(labels, per_prompt[1:], strict=True)), total, idx),
                           layer_parts], axis=1).assign(task=task, level="layer"),
            ]
        return pd.concat(frames, ignore_index=True)

    def attention(self, layer: int, head: int) -> pd.DataFrame:
        """Mean attention from END to the positions each task names (:attr:`ioi_anti.tasks.Task.attention_targets`:
        IO, S1, S2 for IOI, the in-context items for anti-repetition; none for a task without targets)."""
        rows = []
        for task in self.pair.tasks:
            if task.attention_targets is None:
                continue
            for cp in self.tasks[task.name].clean:
                pattern = hero.attention_from_end(self.lm, cp, layer, head)
                for i, ids in enumerate(cp.group.input_ids.tolist()):
                    targets = task.attention_targets(ids, cp.group.tokens[i].tolist(), cp.group.weights[i].tolist())
                    rows += [{"task": task.name, "target": target, "attention": pattern[i, positions].sum()}
                             for target, positions in targets.items()]
        frame = pd.DataFrame(rows, columns=["task", "target", "attention"])
        return frame.groupby(["task", "target"], sort=False)["attention"].agg(["mean", "std", "count"]).reset_index()

    def topk(self, heads: pd.DataFrame) -> pd.DataFrame:
        """Both metrics with the top-k heads of each category ablated together, k = 1..K."""
        categorised = categorise(heads, self.tau, self.pair)
        frames = []
        for category in self.pair.strong_categories:
            members = categorised[categorised["category"] == category]
            ranked = members.assign(strength=_strength(members, category, self.pair)).sort_values("strength",
                                                                                                  ascending=False)
            order = list(zip(ranked["layer"], ranked["head"], strict=True))[: self.params.topk_max]
            for k in range(1, len(order) + 1):
                for task, ht in self.tasks.items():
                    deltas = ht.deltas(lambda cp, v, top=order[:k]: hero.joint_ablation(self.lm, cp, v, top))
                    frames.append(self._rows(task, deltas[None], category=category, k=k,
                                             heads=" ".join(f"L{a}H{b}" for a, b in order[:k])))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STUDY_COLUMNS["topk"])


def _receivers(heads: pd.DataFrame, layer: int, params: HeroHeads, tau: float, pair: Pair) -> pd.DataFrame:
    """Downstream heads to trace: all of them, or the strongest non-weak ones (``receivers``)."""
    downstream = categorise(heads, tau, pair)
    downstream = downstream[downstream["layer"] > layer]
    if params.receivers == "all":
        return downstream
    strong = downstream[downstream["category"] != WEAK]
    score = np.maximum(*(strong[f"delta_{name}"].abs() for name in pair.names))
    return strong.assign(score=score).nlargest(params.max_receivers, "score")
