"""Numerical precision of a loaded model: ``runtime.dtype`` and ``runtime.tf32``.

``float32`` (the default) computes everything in float32. ``bfloat16`` (or ``float16``) is mixed
precision: the blocks' linear layers (the attention projections and the MLPs, nearly all of the
arithmetic of a forward pass) store their weights in the half type and multiply in it, while their
outputs come back as float32, so the residual stream's sums, the norms, the attention scores and
softmax, the unembedding and the metric all stay float32. The error this costs is measured per model
against float32 by ``benchmarks/bench_precision.py`` (docs/performance.md, "Precision").

Hand-rolled rather than ``torch.autocast``: autocast would also lower the attention scores, the
unembedding and the metric (any matmul inside its region) and re-casts every float32 weight on every
call; here each weight is cast once, and the boundary is the module, the same in every pass (clean
passes, replays of blocks, attribution's backward pass, the hero studies).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

HALF_TYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
MATRIX_LAYERS = (nn.Linear, Conv1D)  # Conv1D: GPT-2's projections, a linear layer with its weight transposed


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating-point tensor in it (nested in tuples and lists too) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple | list):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float32 for a half type, else ``dtype`` (float64 tiny models stay float64): what recorded
    activations (``z``) and attribution products are kept in, whichever precision produced them."""
    return torch.promote_types(dtype, torch.float32)


def half_matrix_products(blocks: nn.Module, dtype: torch.dtype) -> int:
    """Make every linear layer under ``blocks`` multiply in ``dtype`` with float32 at its boundary.

    Its weight and bias are stored in ``dtype`` (cast once, which also halves their memory); a forward
    pre-hook casts its inputs to ``dtype`` and a forward hook casts its output back to float32. Returns
    how many layers were converted (zero means the model has none this recognises: an error upstream).
    """
    layers = [m for m in blocks.modules() if isinstance(m, MATRIX_LAYERS)]
    for layer in layers:
        layer.to(dtype)
        layer.register_forward_pre_hook(lambda _m, args, kwargs: (_cast(args, dtype), _cast(kwargs, dtype)),
                                        with_kwargs=True)
        layer.register_forward_hook(lambda _m, _args, output: _cast(output, torch.float32))
    return len(layers)


def matrix_dtype(blocks: nn.Module) -> str:
    """The dtype the blocks' linear layers store their weights and multiply in."""
    layer = next(m for m in blocks.modules() if isinstance(m, MATRIX_LAYERS))
    return str(layer.weight.dtype).removeprefix("torch.")


def precision_words(dtype: str, tf32: bool = False, device: str = "cpu") -> str:
    """A run's precision in words, for the report's run section."""
    if dtype in HALF_TYPES:
        text = (f"mixed {dtype}: the blocks' matrix products in {dtype}; norms, softmax, the residual stream, "
                "the unembedding and the metric in float32")
    else:
        text = dtype
    return text + ("; TF32 matrix products" if tf32 and device.startswith("cuda") else "")


def set_tf32(enabled: bool) -> None:
    """TF32 matrix products on CUDA (``runtime.tf32``): float32 tensors, 10-bit-mantissa products on tensor
    cores. A process-wide torch switch; no effect on a CPU."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
