"""GGUF block quantisation of a model's weights, done in place the way ``llama-quantize --pure`` does it.

Which tensors: every parameter whose name ends in ``weight`` with at least two dimensions (the attention
and MLP matrices, and the token embedding, which a tied model shares with its unembedding), except
position embeddings (llama.cpp never quantises ``position_embd``). Norms and biases (one dimension) stay
float, as llama.cpp leaves them. ``--pure`` gives every such tensor the one type (llama.cpp's default recipe
would store a tied embedding in Q6_K, which the ``gguf`` package cannot quantise in Python).

How: each row along a matrix's *input* dimension (GGUF's ``ne0``: the last dimension of an ``nn.Linear``
or ``nn.Embedding`` weight, the first of GPT-2's ``Conv1D``) is cut into blocks of 32 values, and each
block is quantised and de-quantised by the ``gguf`` package's own code (``gguf.quants``), so the float
weights that result are exactly what a GGUF file of that type would be read back as.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize, quantize
from jaxtyping import Float
from torch import nn
from transformers.pytorch_utils import Conv1D

from ioi_anti.params import GGUF_TYPES

POSITION_EMBEDDINGS = ("wpe", "position")  # GPT-2/Neo's wpe, OPT's embed_positions: left as they are


def gguf_type(name: str) -> GGMLQuantizationType:
    """The GGUF block type called ``name`` (one of :data:`GGUF_TYPES`); an error naming the choices."""
    if name not in GGUF_TYPES:
        raise ValueError(f"Unknown quantisation type {name!r}: the gguf package quantises {', '.join(GGUF_TYPES)}.")
    return GGMLQuantizationType[name]


def round_trip(values: Float[np.ndarray, "rows n"], name: str) -> Float[np.ndarray, "rows n"]:
    """``values`` quantised to GGUF type ``name`` in blocks of 32 along the last axis and read back as float32,
    with the ``gguf`` package's own quantiser and de-quantiser."""
    qtype = gguf_type(name)
    block = GGML_QUANT_SIZES[qtype][0]
    if values.shape[-1] % block:
        raise ValueError(f"A row of {values.shape[-1]} values is not a whole number of {name} blocks of {block}.")
    data = np.ascontiguousarray(values, dtype=np.float32)
    return dequantize(quantize(data, qtype), qtype).reshape(values.shape)


def quantisable(name: str, param: torch.Tensor) -> bool:
    """Whether llama.cpp quantises this parameter (see the module's docstring)."""
    return name.endswith("weight") and param.ndim >= 2 and not any(p in name for p in POSITION_EMBEDDINGS)


def _input_rows(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """The weight as rows along its input dimension (a view: GPT-2's Conv1D stores it transposed)."""
    return weight.T if isinstance(module, Conv1D) else weight


def quantise_weights(model: nn.Module, name: str, seed: int = 0) -> pd.DataFrame:
    """Quantise ``model``'s weights to GGUF type ``name`` in place; per tensor: its shape, the relative size of
    the change (‖W_q − W‖ / ‖W‖), the largest change, and ``fresh_rel_change``: the relative change the same
    type makes to the tensor's values shuffled at random (blocks that do not line up with any grid the values
    may already lie on, as a fresh quantisation of float weights would see them)."""
    gguf_type(name)
    modules = dict(model.named_modules())
    rng = np.random.default_rng(seed)
    rows = []
    for tensor, param in model.named_parameters():
        if not quantisable(tensor, param):
            continue
        module = modules[tensor.rpartition(".")[0]]
        with torch.no_grad():
            rows_view = _input_rows(module, param.data)
            before = rows_view.detach().cpu().numpy().astype(np.float32)
            after = round_trip(before, name)
            shuffled = rng.permutation(before.ravel()).reshape(before.shape)
            norm = float(np.linalg.norm(before)) or 1.0
            rows.append({"tensor": tensor, "shape": "×".join(str(d) for d in param.shape),
                         "n_values": int(before.size), "rel_change": float(np.linalg.norm(after - before)) / norm,
                         "max_change": float(np.abs(after - before).max()),
                         "fresh_rel_change": float(np.linalg.norm(round_trip(shuffled, name) - shuffled)) / norm})
            rows_view.copy_(torch.from_numpy(after).to(param.dtype))
    if not rows:
        raise ValueError(f"{type(model).__name__} has no weight matrix to quantise.")
    return pd.DataFrame(rows).assign(quantisation=name)
