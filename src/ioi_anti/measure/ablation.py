"""Hooking and per-head ablation on a ``TransformerBridge``: exact sweep, naive reference,
and attribution patching.

Ablation replaces one head's ``z`` (``blocks.{L}.attn.hook_z``, the input of the output
projection, ``[batch, pos, head, d_head]``) at every position by an *ablation value*:

* ``mean``: the position-wise mean of that head's ``z`` over the pool prompts of the same
  template (ABC prompts for IOI, non-copy prompts for anti-repetition);
* ``zero``: zeros;
* ``resample``: the ``z`` of one other pool prompt of the same template (seeded).

The exact sweep is fast without changing the numbers: a clean pass records what enters every
block (the residual stream and the keyword arguments the HF model passes: masks, rotary
tables, position ids), so ablating a head in layer L replays only blocks L..N-1; all heads of
a layer are ablated at once in a batch of copies; logits are computed at END only, in every pass
(``logits_to_keep=1``: prompts of a group share their length, so END is the last position; a
full-vocabulary logits tensor of every position would be ~1.8 GB per batch for Gemma-3), and in
the replays at the candidate tokens only (:func:`end_candidates`).
:func:`reference_layer_metrics` is the plain one-full-forward-per-head version it is tested
against.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ioi_anti.measure.metrics import task_accuracy, task_metric
from ioi_anti.models.loading import LoadedModel
from ioi_anti.models.precision import at_least_float32
from ioi_anti.params import ABLATIONS


def z_hook_name(layer: int) -> str:
    """Name of the hook on a layer's per-head attention output before W_O."""
    return f"blocks.{layer}.attn.hook_z"


@dataclass
class PromptGroup:
    """Prompts of one token length (so END is the last position of every row): no padding."""

    prompt_ids: np.ndarray
    pair_ids: np.ndarray
    template_ids: np.ndarray
    input_ids: Int[Tensor, "b p"]
    tokens: Int[Tensor, "b k"]
    weights: Float[Tensor, "b k"]

    @property
    def size(self) -> int:
        return len(self.prompt_ids)


def make_groups(tokens: pd.DataFrame, device: torch.device, max_batch: int = 64) -> list[PromptGroup]:
    """Group tokenised prompts by length (then chunk), so that no batch is ever padded."""
    if tokens.empty:
        raise ValueError("Empty prompt set: there is nothing to measure.")
    groups = []
    for _, frame in tokens.sort_values(["n_tokens", "prompt_id"]).groupby("n_tokens", sort=True):
        for start in range(0, len(frame), max_batch):
            chunk = frame.iloc[start : start + max_batch]
            width = max(len(t) for t in chunk["metric_token_ids"])
            tok = np.zeros((len(chunk), width), dtype=np.int64)
            wts = np.zeros((len(chunk), width), dtype=np.float32)
            for i, (t, w) in enumerate(zip(chunk["metric_token_ids"], chunk["metric_weights"], strict=True)):
                tok[i, : len(t)], wts[i, : len(w)] = t, w
            groups.append(PromptGroup(
                prompt_ids=chunk["prompt_id"].to_numpy(), pair_ids=chunk["pair_id"].to_numpy(),
                template_ids=chunk["template_id"].to_numpy(),
                input_ids=torch.tensor(np.stack(chunk["input_ids"].to_numpy()), device=device),
                tokens=torch.tensor(tok, device=device), weights=torch.tensor(wts, device=device),
            ))
    return groups


@dataclass
class CleanPass:
    """What one un-ablated forward pass of a group leaves behind for the sweep."""

    group: PromptGroup
    cand_logits: Float[Tensor, "b k"]
    resid: list[Tensor] = field(default_factory=list)
    resid_final: Tensor | None = None
    block_args: list[tuple[tuple, dict[str, Any]]] = field(default_factory=list)
    z: Float[Tensor, "layer b p head d_head"] | None = None

    @property
    def metric(self) -> Float[Tensor, " b"]:
        return task_metric(self.cand_logits, self.group.weights)


def end_candidates(
    lm: LoadedModel, resid_end: Float[Tensor, "n d"], tokens: Int[Tensor, "n k"]
) -> Float[Tensor, "n k"]:
    """Final norm of END residuals and their logits at the candidate tokens only.

    The metric is linear in those few logits, so only the candidates' unembedding rows are used:
    the full vocabulary (262k rows for Gemma-3) cost about as much per replayed row as two of its
    blocks. The bridge's unembedding is the HF output ``Linear`` between two hook points, which
    nothing here hooks, so its weight (and bias) rows give the same logits.
    """
    normed = lm.bridge.ln_final(resid_end)
    unembed = lm.bridge.unembed.original_component
    logits = torch.einsum("nd,nkd->nk", normed, unembed.weight[tokens])
    return logits if unembed.bias is None else logits + unembed.bias[tokens]


@contextlib.contextmanager
def _capture_block_inputs(lm: LoadedModel) -> Iterator[list[tuple[tuple, dict[str, Any]]]]:
    """Record the positional and keyword inputs of every block during one forward pass.

    Plain torch pre-hooks (not TransformerLens hooks): the replay needs the exact arguments the
    HF model hands each block (masks, rotary tables), which no TransformerLens hook exposes.
    """
    captured: list[tuple[tuple, dict[str, Any]]] = [((), {}) for _ in lm.bridge.blocks]
    handles = []
    for layer, block in enumerate(lm.bridge.blocks):
        def pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict, layer: int = layer) -> None:
            captured[layer] = (args, dict(kwargs))
        handles.append(block.register_forward_pre_hook(pre_hook, with_kwargs=True))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


class _FinalResidual(Exception):  # noqa: N818 - a signal that ends a forward pass, not an error
    """Raised at the final norm by a clean pass, carrying the residual stream that enters it."""

    def __init__(self, resid: Tensor) -> None:
        super().__init__()
        self.resid = resid


def _stop_at_final_norm(module: torch.nn.Module, args: tuple) -> None:
    raise _FinalResidual(args[0].detach())


def clean_pass(lm: LoadedModel, group: PromptGroup, keep_resid: bool, keep_z: bool) -> CleanPass:
    """One forward pass recording END candidate logits and, on request, block inputs and z.

    The pass stops where the final norm starts, and the candidate logits come from
    :func:`end_candidates`, as in every replay: the full-vocabulary unembedding cost Gemma-3 more
    than half of its clean passes (a 262k x 640 weight read for a few rows), and clean and
    ablated metrics now share one unembedding path.
    """
    z_store: dict[int, Tensor] = {}
    hooks = []
    if keep_z:
        for layer in range(lm.n_layers):
            def save(z: Tensor, hook: Any, layer: int = layer) -> None:
                z_store[layer] = z.detach().to(at_least_float32(z.dtype), copy=True)
            hooks.append((z_hook_name(layer), save))
    handle = lm.bridge.ln_final.register_forward_pre_hook(_stop_at_final_norm)
    try:
        with torch.no_grad(), _capture_block_inputs(lm) as block_inputs:
            lm.bridge.run_with_hooks(group.input_ids, fwd_hooks=hooks, use_cache=False, logits_to_keep=1)
        raise RuntimeError(f"{lm.spec.model_id}: the forward pass never reached the final norm.")
    except _FinalResidual as stop:
        final = stop.resid
    finally:
        handle.remove()
    with torch.no_grad():
        cand = end_candidates(lm, final[:, -1], group.tokens)
    result = CleanPass(group=group, cand_logits=cand)
    if keep_resid:
        result.resid_final = final
        for args, kwargs in block_inputs:
            hidden = args[0] if args else kwargs["hidden_states"]
            result.resid.append(hidden.detach())
            result.block_args.append((args[1:], {k: v for k, v in kwargs.items() if k != "hidden_states"}))
    if keep_z:
        result.z = torch.stack([z_store[layer] for layer in range(lm.n_layers)])
    return result


def attention_patterns(lm: LoadedModel, group: PromptGroup) -> Float[Tensor, "layer b head q k"]:
    """Every layer's attention pattern on a group's prompts (one forward pass, stopped at the final norm)."""
    store: dict[int, Tensor] = {}
    hooks = []
    for layer in range(lm.n_layers):
        def save(pattern: Tensor, hook: Any, layer: int = layer) -> None:
            store[layer] = pattern.detach().float()
        hooks.append((f"blocks.{layer}.attn.hook_pattern", save))
    handle = lm.bridge.ln_final.register_forward_pre_hook(_stop_at_final_norm)
    try:
        with torch.no_grad():
            lm.bridge.run_with_hooks(group.input_ids, fwd_hooks=hooks, use_cache=False, logits_to_keep=1)
    except _FinalResidual:
        pass
    finally:
        handle.remove()
    return torch.stack([store[layer] for layer in range(lm.n_layers)])


def _repeat_batch(value: Any, batch: int, times: int) -> Any:
    """Tile every tensor whose leading dim is the batch ``times`` times (in nested containers too)."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value.repeat(times, *([1] * (value.ndim - 1)))
    if isinstance(value, tuple | list):
        return type(value)(_repeat_batch(v, batch, times) for v in value)
    if isinstance(value, dict):
        return {k: _repeat_batch(v, batch, times) for k, v in value.items()}
    return value


def run_blocks(
    lm: LoadedModel, clean: CleanPass, layer: int, x: Tensor, times: int, stop: int | None = None
) -> Tensor:
    """Replay blocks ``layer..stop-1`` (default: to the end) on ``x`` (``times`` stacked copies)."""
    for k in range(layer, lm.n_layers if stop is None else stop):
        args, kwargs = clean.block_args[k]
        args = _repeat_batch(args, clean.group.size, times)
        kwargs = _repeat_batch(kwargs, clean.group.size, times)
        out = lm.bridge.blocks[k](x, *args, **kwargs)
        x = out[0] if isinstance(out, tuple) else out
    return x


Variant = tuple[int, Tensor]
"""One edit of a layer: a head index and the ``[b, p, d_head]`` value its ``z`` is set to."""


def _set_variants(variants: Sequence[Variant], batch: int) -> Callable[[Tensor, Any], Tensor]:
    """Hook: in copy i of the stacked batch, set head ``variants[i][0]``'s z to ``variants[i][1]``."""

    def hook(z: Tensor, hook: Any) -> Tensor:
        z = z.clone()
        for i, (head, value) in enumerate(variants):
            z[i * batch : (i + 1) * batch, :, head] = value
        return z

    return hook


def variant_metrics(
    lm: LoadedModel, clean: CleanPass, layer: int, variants: Sequence[Variant], max_rows: int = 512
) -> Float[Tensor, "variant b"]:
    """Task metric of each prompt under each single-head edit of ``layer`` (replaying L..N-1)."""
    b = clean.group.size
    per_chunk = max(1, max_rows // b)
    out = []
    for start in range(0, len(variants), per_chunk):
        chunk = variants[start : start + per_chunk]
        x = clean.resid[layer].repeat(len(chunk), 1, 1)
        with torch.no_grad(), lm.bridge.hooks(fwd_hooks=[(z_hook_name(layer), _set_variants(chunk, b))]):
            x = run_blocks(lm, clean, layer, x, len(chunk))
            cand = end_candidates(lm, x[:, -1], clean.group.tokens.repeat(len(chunk), 1))
        out.append(task_metric(cand, clean.group.weights.repeat(len(chunk), 1)).view(len(chunk), b))
    return torch.cat(out)


def ablated_layer_metrics(
    lm: LoadedModel, clean: CleanPass, values: Float[Tensor, "b p head d_head"], layer: int,
    max_rows: int = 512, heads: Sequence[int] | None = None,
) -> Float[Tensor, "head b"]:
    """Task metric of each prompt with each head of ``layer`` (or of ``heads`` only) ablated (fast exact path)."""
    chosen = range(lm.n_heads) if heads is None else heads
    return variant_metrics(lm, clean, layer, [(head, values[:, :, head]) for head in chosen], max_rows)


def reference_layer_metrics(
    lm: LoadedModel, group: PromptGroup, values: Float[Tensor, "b p head d_head"], layer: int
) -> Float[Tensor, "head b"]:
    """Naive reference: one full forward pass per head through the bridge's hooks."""
    out = []
    for head in range(lm.n_heads):
        def hook(z: Tensor, hook: Any, head: int = head) -> Tensor:
            z = z.clone()
            z[:, :, head] = values[:, :, head]
            return z
        with torch.no_grad():
            logits = lm.bridge.run_with_hooks(group.input_ids, fwd_hooks=[(z_hook_name(layer), hook)],
                                              use_cache=False, logits_to_keep=1)
        out.append(task_metric(logits[:, -1].gather(-1, group.tokens), group.weights))
    return torch.stack(out)


class AblationValues:
    """Per-prompt ablation values of every layer's heads, from a pool of same-template prompts."""

    def __init__(self, kind: str, lm: LoadedModel, pool: list[PromptGroup], seed: int) -> None:
        if kind not in ABLATIONS:
            raise ValueError(f"Unknown ablation {kind!r}; choose one of {ABLATIONS}.")
        self.kind, self.seed, self.lm = kind, seed, lm
        self.stacks: dict[int, Tensor] = {}
        self.stack_ids: dict[int, np.ndarray] = {}
        if kind == "zero":
            return
        by_template: dict[int, list[tuple[int, Tensor]]] = {}
        for group in pool:
            z = clean_pass(lm, group, keep_resid=False, keep_z=True).z
            for i, (pid, tid) in enumerate(zip(group.prompt_ids, group.template_ids, strict=True)):
                by_template.setdefault(int(tid), []).append((int(pid), z[:, i]))
        for tid, items in by_template.items():
            self.stack_ids[tid] = np.array([pid for pid, _ in items])
            self.stacks[tid] = torch.stack([z for _, z in items])  # [n, layer, p, head, d_head]

    def for_group(self, group: PromptGroup) -> Float[Tensor, "layer b p head d_head"]:
        """Ablation values for every layer and prompt of ``group``."""
        shape = (self.lm.n_layers, group.size, group.input_ids.shape[1], self.lm.n_heads, self.lm.d_head)
        if self.kind == "zero":
            return torch.zeros(shape, device=group.input_ids.device, dtype=self._dtype())
        per_prompt = []
        for pid, tid in zip(group.prompt_ids, group.template_ids, strict=True):
            if int(tid) not in self.stacks:
                raise ValueError(f"No pool prompts for template {tid}: cannot build {self.kind} ablation values.")
            stack = self.stacks[int(tid)]
            if self.kind == "mean":
                per_prompt.append(stack.mean(0))
            else:
                others = np.flatnonzero(self.stack_ids[int(tid)] != pid)
                if len(others) == 0:
                    raise ValueError(f"Template {tid} has no other pool prompt to resample from.")
                pick = np.random.default_rng([self.seed, int(pid)]).choice(others)
                per_prompt.append(stack[pick])
        return torch.stack(per_prompt, dim=1)

    def _dtype(self) -> torch.dtype:
        return next(self.lm.bridge.parameters()).dtype


def attribution_metrics(
    lm: LoadedModel, group: PromptGroup, values: Float[Tensor, "layer b p head d_head"]
) -> Float[Tensor, "layer head b"]:
    """Attribution patching: first-order estimate of each head's ablation effect on the metric.

    One forward and one backward pass: ``(value - z) . d metric / d z`` summed over positions
    and ``d_head``, per prompt, for every head at once. The gradient is taken with respect to a
    zero-valued leaf *added* to each layer's ``z``, so every path from a head to the metric stays
    in the graph, through the attention of later layers included (replacing ``z`` by a detached
    leaf would cut those paths and leave only the last layer's estimates right).
    """
    leaves: dict[int, Tensor] = {}
    z_clean: dict[int, Tensor] = {}
    hooks = []
    for layer in range(lm.n_layers):
        def add_leaf(z: Tensor, hook: Any, layer: int = layer) -> Tensor:
            z_clean[layer] = z.detach()
            leaves[layer] = torch.zeros_like(z_clean[layer], requires_grad=True)
            return z + leaves[layer]
        hooks.append((z_hook_name(layer), add_leaf))
    with torch.enable_grad():
        logits = lm.bridge.run_with_hooks(group.input_ids, fwd_hooks=hooks, use_cache=False, logits_to_keep=1)
        metric = task_metric(logits[:, -1].gather(-1, group.tokens), group.weights)
        grads = torch.autograd.grad(metric.sum(), [leaves[layer] for layer in range(lm.n_layers)])
    z = torch.stack([z_clean[layer] for layer in range(lm.n_layers)])
    wide = at_least_float32(z.dtype)
    return ((values.to(wide) - z.to(wide)) * torch.stack(grads).to(wide)).sum(dim=(2, 4)).permute(0, 2, 1)


def candidate_logits(lm: LoadedModel, groups: Sequence[PromptGroup]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-prompt metric and accuracy (clean passes), in order of ``prompt_id``."""
    ids, metric, acc = [], [], []
    for group in groups:
        cand = clean_pass(lm, group, keep_resid=False, keep_z=False).cand_logits
        ids.append(group.prompt_ids)
        metric.append(task_metric(cand, group.weights).float().cpu().numpy())
        acc.append(task_accuracy(cand, group.weights).cpu().numpy())
    order = np.argsort(np.concatenate(ids))
    return np.concatenate(ids)[order], np.concatenate(metric)[order], np.concatenate(acc)[order]
