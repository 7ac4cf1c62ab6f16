"""Hero-head case studies on top of the ablation engine: dose-response curves, cumulative
top-k ablation, path patching (direct effect and effects routed through downstream heads'
query, key and value inputs) and where a head attends from END.

Path patching follows Wang et al. (2022): the hero head's *contribution* is the change its
ablation makes to the attention-layer output that is added to the residual stream
(``blocks.{L}.hook_attn_out``). Patching it on one path means adding that change only to the
input of one receiver (the final unembedding for the direct effect; one downstream head's
query, key or value input), recomputing everything after the receiver from there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ioi_anti.ablation import (
    REFERENCE_ROLES,
    AblationValues,
    CleanPass,
    clean_pass,
    end_candidates,
    make_groups,
    run_blocks,
    task_metric,
    variant_metrics,
    z_hook_name,
)
from ioi_anti.models import LoadedModel

QKV = ("q", "k", "v")


def _capture(name: str, store: dict[str, Tensor]) -> tuple[str, Any]:
    def hook(t: Tensor, hook: Any) -> None:
        store[name] = t.detach().clone()
    return name, hook


def _replace(name: str, value: Tensor) -> tuple[str, Any]:
    return name, lambda t, hook: value


def _run_block(lm: LoadedModel, clean: CleanPass, layer: int, x: Tensor, hooks: list[tuple[str, Any]]) -> Tensor:
    with torch.no_grad(), lm.bridge.hooks(fwd_hooks=hooks):
        return run_blocks(lm, clean, layer, x, times=1, stop=layer + 1)


def contribution(
    lm: LoadedModel, clean: CleanPass, layer: int, head: int, value: Float[Tensor, "b p d_head"]
) -> Float[Tensor, "b p d_model"]:
    """Change of the layer's attention output (what enters the residual) when ``head`` is ablated."""
    store: dict[str, Tensor] = {}
    out_name = f"blocks.{layer}.hook_attn_out"

    def ablate(z: Tensor, hook: Any) -> Tensor:
        z = z.clone()
        z[:, :, head] = value
        return z

    _run_block(lm, clean, layer, clean.resid[layer], [_capture(out_name, store)])
    before = store.pop(out_name)
    _run_block(lm, clean, layer, clean.resid[layer], [(z_hook_name(layer), ablate), _capture(out_name, store)])
    return store[out_name] - before


def dose_response(
    lm: LoadedModel, clean: CleanPass, layer: int, head: int, z_clean: Tensor, value: Tensor,
    alphas: Sequence[float],
) -> Float[Tensor, "alpha b"]:
    """Metric as the head's z moves from clean (alpha 0) to its ablation value (alpha 1)."""
    variants = [(head, z_clean + alpha * (value - z_clean)) for alpha in alphas]
    return variant_metrics(lm, clean, layer, variants)


def joint_ablation(
    lm: LoadedModel, clean: CleanPass, values: Float[Tensor, "layer b p head d_head"],
    heads: Sequence[tuple[int, int]],
) -> Float[Tensor, " b"]:
    """Metric with all ``(layer, head)`` pairs ablated together."""
    if not heads:
        return clean.metric
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    hooks = []
    for layer, hs in by_layer.items():
        def ablate(z: Tensor, hook: Any, layer: int = layer, hs: list[int] = hs) -> Tensor:
            z = z.clone()
            z[:, :, hs] = values[layer][:, :, hs]
            return z
        hooks.append((z_hook_name(layer), ablate))
    start = min(by_layer)
    with torch.no_grad(), lm.bridge.hooks(fwd_hooks=hooks):
        x = run_blocks(lm, clean, start, clean.resid[start], times=1)
        return task_metric(end_candidates(lm, x[:, -1], clean.group.tokens), clean.group.weights)


def direct_metric(lm: LoadedModel, clean: CleanPass, delta_out: Tensor) -> Float[Tensor, " b"]:
    """Metric when the contribution reaches the unembedding directly and nothing else."""
    if clean.resid_final is None:
        raise ValueError("direct_metric needs a clean pass run with keep_resid=True.")
    with torch.no_grad():
        cand = end_candidates(lm, clean.resid_final[:, -1] + delta_out[:, -1], clean.group.tokens)
    return task_metric(cand, clean.group.weights)


def all_paths_metric(lm: LoadedModel, clean: CleanPass, layer: int, delta_out: Tensor) -> Float[Tensor, " b"]:
    """Metric when the contribution reaches every downstream reader at once (the total effect)."""
    hooks = [(f"blocks.{layer}.hook_attn_out", lambda out, hook: out + delta_out)]
    with torch.no_grad(), lm.bridge.hooks(fwd_hooks=hooks):
        x = run_blocks(lm, clean, layer, clean.resid[layer], times=1)
        return task_metric(end_candidates(lm, x[:, -1], clean.group.tokens), clean.group.weights)


def receiver_metrics(
    lm: LoadedModel, clean: CleanPass, delta_out: Tensor, receiver_layer: int, heads: Sequence[int]
) -> dict[tuple[int, str], Tensor]:
    """Metric when the contribution reaches only head D's query, key or value input (D in ``heads``).

    The receiver layer is run once on the residual plus the contribution to get every head's
    patched q, k and v; then once per input kind with only that input patched, which gives
    each head's patched ``z`` (a head's z depends on its own q and its own key/value group only).
    """
    names = {kind: f"blocks.{receiver_layer}.attn.hook_{kind}" for kind in QKV}
    patched: dict[str, Tensor] = {}
    _run_block(lm, clean, receiver_layer, clean.resid[receiver_layer] + delta_out,
               [_capture(names[kind], patched) for kind in QKV])
    variants, keys = [], []
    for kind in QKV:
        z_store: dict[str, Tensor] = {}
        zname = z_hook_name(receiver_layer)
        _run_block(lm, clean, receiver_layer, clean.resid[receiver_layer],
                   [_replace(names[kind], patched[names[kind]]), _capture(zname, z_store)])
        for head in heads:
            variants.append((head, z_store[zname][:, :, head]))
            keys.append((head, kind))
    metrics = variant_metrics(lm, clean, receiver_layer, variants) if variants else torch.empty(0)
    return {key: metrics[i] for i, key in enumerate(keys)}


def attention_from_end(lm: LoadedModel, clean: CleanPass, layer: int, head: int) -> np.ndarray:
    """Attention pattern row of END for one head, ``[b, key_pos]``."""
    store: dict[str, Tensor] = {}
    name = f"blocks.{layer}.attn.hook_pattern"
    _run_block(lm, clean, layer, clean.resid[layer], [_capture(name, store)])
    return store[name][:, head, -1].float().cpu().numpy()


def ioi_positions(input_ids: Sequence[int], io: int, s: int) -> dict[str, int]:
    """Positions of IO, S1 and S2 in an IOI prompt (END excluded)."""
    ids = list(input_ids)[:-1]
    s_pos = [i for i, t in enumerate(ids) if t == s]
    return {"IO": ids.index(io), "S1": s_pos[0], "S2": s_pos[-1]}


def item_positions(input_ids: Sequence[int], context_tokens: Sequence[int]) -> list[int]:
    """Positions of in-context list items in a list prompt (END excluded)."""
    wanted = set(context_tokens)
    return [i for i, t in enumerate(list(input_ids)[:-1]) if t in wanted]


def parse_head(label: str) -> tuple[int, int]:
    """``"L34H2"`` -> ``(34, 2)``; anything else is a clear error."""
    match = re.fullmatch(r"L(\d+)H(\d+)", label.strip())
    if not match:
        raise ValueError(f"Head {label!r} is not of the form L<layer>H<head>, e.g. L34H2.")
    return int(match.group(1)), int(match.group(2))


@dataclass
class HeroTask:
    """One task's clean passes (a prompt subset), ablation values and gap, for case studies."""

    task: str
    clean: list[CleanPass]
    values: list[Tensor]
    gap: float

    def deltas(self, metric_fn: Callable[[CleanPass, Tensor], Tensor]) -> np.ndarray:
        """Per-prompt ``(metric - clean) / gap`` over every group, for one intervention."""
        parts = [(metric_fn(cp, values) - cp.metric).float().cpu().numpy()
                 for cp, values in zip(self.clean, self.values, strict=True)]
        return np.concatenate(parts, axis=-1) / self.gap


def prepare_hero_task(
    lm: LoadedModel, tokens: pd.DataFrame, task: str, ablation: str, seed: int, gap: float,
    max_prompts: int, max_batch: int,
) -> HeroTask:
    """Clean passes (residuals and z kept) on the first ``max_prompts`` clean prompts of a task."""
    rows = tokens[tokens["task"] == task]
    clean_rows = rows[rows["role"] == "clean"].sort_values("pair_id").head(max_prompts)
    pool = make_groups(rows[rows["role"].isin(REFERENCE_ROLES[task])], lm.device, max_batch)
    values = AblationValues(ablation, lm, pool, seed)
    groups = make_groups(clean_rows, lm.device, max_batch)
    return HeroTask(task=task, clean=[clean_pass(lm, g, keep_resid=True, keep_z=True) for g in groups],
                    values=[values.for_group(g) for g in groups], gap=gap)
