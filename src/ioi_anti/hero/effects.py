"""Hero-head case studies on top of the ablation engine: dose-response curves, cumulative
top-k ablation, path patching (direct effect and effects routed through downstream heads'
query, key and value inputs), the decomposition of a head's whole effect over the first
components that read its output, and where a head attends from END.

Path patching follows Wang et al. (2022): the hero head's *contribution* is the change its
ablation makes to the attention-layer output that is added to the residual stream
(``blocks.{L}.hook_attn_out``). Patching it on one path means adding that change only to the
input of one receiver (the final unembedding for the direct effect; one downstream head's
query, key or value input), recomputing everything after the receiver from there.

The *decomposition* splits a hero's total effect by the first component that reads its
contribution from the residual stream: every path from the head to the logits starts with
exactly one such reader, so the parts are disjoint. The readers are the unembedding (the direct
effect), the attention of each later layer (all heads together, and each group of heads given by
the caller, e.g. per category), and the MLP of the hero's own layer and of each later one. In a
block that runs attention and MLP in parallel (GPT-NeoX/Pythia) the hero's own MLP does not see
its output, and its part comes out zero by construction; Gemma's post-attention norm is inside the
contribution (``hook_attn_out`` is after it), and the pre-MLP/attention norms belong to the reader.
What the parts leave unexplained (``total - sum of parts``) is the non-additivity: effects that
need the contribution at two readers at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ioi_anti.measure.ablation import (
    AblationValues,
    CleanPass,
    clean_pass,
    end_candidates,
    make_groups,
    run_blocks,
    variant_metrics,
    z_hook_name,
)
from ioi_anti.measure.metrics import task_metric
from ioi_anti.models.loading import LoadedModel
from ioi_anti.models.precision import at_least_float32

QKV = ("q", "k", "v")


def _capture(name: str, store: dict[str, Tensor]) -> tuple[str, Any]:
    """Hook that keeps a copy of what passes ``name``, in float32 at least (as clean passes keep ``z``)."""
    def hook(t: Tensor, hook: Any) -> None:
        store[name] = t.detach().to(at_least_float32(t.dtype), copy=True)
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
            z[:, :, hs] = values[layer][:, :, hs].to(z.dtype)
            return z
        hooks.append((z_hook_name(layer), ablate))
    return _metric_from(lm, clean, min(by_layer), hooks)[0]


def _metric_from(
    lm: LoadedModel, clean: CleanPass, layer: int, hooks: list[tuple[str, Any]], times: int = 1
) -> Float[Tensor, "times b"]:
    """Metric per prompt after replaying blocks ``layer..`` on ``times`` copies of the clean input under ``hooks``."""
    x = clean.resid[layer].repeat(times, 1, 1)
    with torch.no_grad(), lm.bridge.hooks(fwd_hooks=hooks):
        x = run_blocks(lm, clean, layer, x, times=times)
        cand = end_candidates(lm, x[:, -1], clean.group.tokens.repeat(times, 1))
    return task_metric(cand, clean.group.weights.repeat(times, 1)).view(times, clean.group.size)


def direct_metric(lm: LoadedModel, clean: CleanPass, delta_out: Tensor) -> Float[Tensor, " b"]:
    """Metric when the contribution reaches the unembedding directly and nothing else."""
    if clean.resid_final is None:
        raise ValueError("direct_metric needs a clean pass run with keep_resid=True.")
    with torch.no_grad():
        cand = end_candidates(lm, clean.resid_final[:, -1] + delta_out[:, -1], clean.group.tokens)
    return task_metric(cand, clean.group.weights)


def all_paths_metric(lm: LoadedModel, clean: CleanPass, layer: int, delta_out: Tensor) -> Float[Tensor, " b"]:
    """Metric when the contribution reaches every downstream reader at once (the total effect)."""
    return _metric_from(lm, clean, layer, [(f"blocks.{layer}.hook_attn_out", lambda out, hook: out + delta_out)])[0]


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


@dataclass(frozen=True)
class ReaderPart:
    """One first reader of a hero's contribution and the metric when only it reads the contribution."""

    reader: str  # "direct" | "attention" | "mlp"
    layer: int  # the reader's layer (-1 for the unembedding)
    heads: str  # for attention: "all heads" or the name of a head group; "" otherwise
    metric: Float[Tensor, " b"]


def decompose(
    lm: LoadedModel, clean: CleanPass, layer: int, delta_out: Float[Tensor, "b p d_model"],
    head_groups: dict[str, Sequence[tuple[int, int]]],
) -> list[ReaderPart]:
    """The metric with the hero's contribution read by one first reader at a time (module docstring).

    Attention of layer ``R > layer``: the layer's ``z`` is computed from the residual plus the
    contribution (every head reads it through its own q, k and v), then put in place of the clean
    ``z`` for all heads, or for one group of heads only, and the rest of the model is replayed.
    MLP of layer ``R >= layer``: its output is computed with the contribution added to its input
    and the layer's attention clean, then put in place of the clean MLP output and replayed.
    ``clean`` must hold residuals and ``z`` (``keep_resid=True``, ``keep_z=True``).
    """
    if clean.z is None or not clean.resid:
        raise ValueError("decompose needs a clean pass run with keep_resid=True and keep_z=True.")
    parts = [ReaderPart("direct", -1, "", direct_metric(lm, clean, delta_out))]
    for reader in range(layer, lm.n_layers):
        z_clean, z_name, mlp_name = clean.z[reader], z_hook_name(reader), f"blocks.{reader}.hook_mlp_out"
        store: dict[str, Tensor] = {}
        if reader == layer:  # the contribution enters the stream after this layer's attention
            _run_block(lm, clean, reader, clean.resid[reader],
                       [(f"blocks.{reader}.hook_attn_out", lambda out, hook: out + delta_out),
                        _capture(mlp_name, store)])
        else:  # hooks on one point run in order: z is read with the contribution, then made clean
            _run_block(lm, clean, reader, clean.resid[reader] + delta_out,
                       [_capture(z_name, store), _replace(z_name, z_clean), _capture(mlp_name, store)])
            variants = {"all heads": store[z_name]}
            for name, members in head_groups.items():
                chosen = [h for r, h in members if r == reader]
                if chosen:
                    variants[name] = z_clean.clone()
                    variants[name][:, :, chosen] = store[z_name][:, :, chosen]
            metrics = _metric_from(lm, clean, reader, [_replace(z_name, torch.cat(list(variants.values())))],
                                   times=len(variants))
            parts += [ReaderPart("attention", reader, name, m) for name, m in zip(variants, metrics, strict=True)]
        mlp_metric = _metric_from(lm, clean, reader, [_replace(mlp_name, store[mlp_name])])[0]
        parts.append(ReaderPart("mlp", reader, "", mlp_metric))
    return parts


def attention_from_end(lm: LoadedModel, clean: CleanPass, layer: int, head: int) -> np.ndarray:
    """Attention pattern row of END for one head, ``[b, key_pos]``."""
    store: dict[str, Tensor] = {}
    name = f"blocks.{layer}.attn.hook_pattern"
    _run_block(lm, clean, layer, clean.resid[layer], [_capture(name, store)])
    return store[name][:, head, -1].float().cpu().numpy()


def parse_head(label: str) -> tuple[int, int]:
    """``"L34H2"`` -> ``(34, 2)``; anything else is a clear error."""
    match = re.fullmatch(r"L(\d+)H(\d+)", label.strip())
    if not match:
        raise ValueError(f"Head {label!r} is not of the form L<layer>H<head>, e.g. L34H2.")
    return int(match.group(1)), int(match.group(2))


def check_named_heads(named: Mapping[str, Sequence[str]], grids: Mapping[str, tuple[int, int]]) -> None:
    """Every hero head named for a model of ``grids`` (model -> layers, heads) lies inside its grid."""
    for model, labels in named.items():
        if model not in grids:
            continue
        n_layers, n_heads = grids[model]
        for label in labels:
            layer, head = parse_head(label)
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise ValueError(f"Named hero head {label} is outside {model}'s grid ({n_layers} layers x "
                                 f"{n_heads} heads): fix `hero_heads.named`.")


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
    lm: LoadedModel, tokens: pd.DataFrame, task: str, roles: Sequence[str], ablation: str, seed: int, gap: float,
    max_prompts: int, max_batch: int,
) -> HeroTask:
    """Clean passes (residuals and z kept) on the first ``max_prompts`` clean prompts of a task, and
    ablation values from its prompts of ``roles`` (the task's ablation roles)."""
    rows = tokens[tokens["task"] == task]
    clean_rows = rows[rows["role"] == "clean"].sort_values("pair_id").head(max_prompts)
    pool = make_groups(rows[rows["role"].isin(roles)], lm.device, max_batch)
    values = AblationValues(ablation, lm, pool, seed)
    groups = make_groups(clean_rows, lm.device, max_batch)
    return HeroTask(task=task, clean=[clean_pass(lm, g, keep_resid=True, keep_z=True) for g in groups],
                    values=[values.for_group(g) for g in groups], gap=gap)
