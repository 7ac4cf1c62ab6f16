"""Mixed precision (``runtime.dtype: bfloat16``): what runs in the half type, what stays float32, and
that every pass of the measurement honours it."""

from __future__ import annotations

import pytest
import torch
from conftest import setup_task
from tiny_models import TINY_FAMILIES, tiny_model

from ioi_anti.ablation import attribution_metrics, clean_pass, make_groups
from ioi_anti.precision import MATRIX_LAYERS, matrix_dtype, precision_words


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_matrix_products_run_in_bfloat16_and_everything_else_in_float32(family, smol_tokenizer, tokens_by_task):
    full, mixed = (tiny_model(family, smol_tokenizer, precision=p) for p in ("float32", "bfloat16"))
    assert mixed.describe()["dtype"] == "bfloat16" and full.describe()["dtype"] == "float32"
    assert matrix_dtype(mixed.bridge.blocks) == "bfloat16" and matrix_dtype(full.bridge.blocks) == "float32"
    layers = [m for m in mixed.bridge.blocks.modules() if isinstance(m, MATRIX_LAYERS)]
    assert len(layers) >= 4 * mixed.n_layers  # q/k/v (or fused), o, and at least two MLP projections per block
    matrix_params = {id(p) for m in layers for p in m.parameters()}
    rest = [p for p in mixed.bridge.parameters() if id(p) not in matrix_params]
    assert rest and all(p.dtype == torch.float32 for p in rest)  # embeddings, norms, unembedding
    assert mixed.bridge.unembed.original_component.weight.dtype == torch.float32

    group = make_groups(tokens_by_task["ioi"][tokens_by_task["ioi"]["role"] == "clean"], mixed.device)[0]
    passes = [clean_pass(lm, group, keep_resid=True, keep_z=True) for lm in (full, mixed)]
    for cp in passes:  # z: the rotary families' bridges round it to bfloat16 for W_O; it is kept in float32
        assert cp.z.dtype == cp.resid[1].dtype == cp.resid_final.dtype == cp.cand_logits.dtype == torch.float32
    gap = (passes[1].cand_logits - passes[0].cand_logits).abs().max()
    scale = passes[0].cand_logits.abs().max()
    assert 0 < gap < 0.05 * scale, "bfloat16 did not act, or acted far beyond its rounding"


@pytest.mark.parametrize("family", ["gpt2", "gemma"])
def test_attribution_in_bfloat16_is_close_to_float32(family, smol_tokenizer, tokens_by_task) -> None:
    """The backward pass goes through the half-precision layers too (gradients reach every layer)."""
    estimates = []
    for precision in ("float32", "bfloat16"):
        lm = tiny_model(family, smol_tokenizer, precision=precision)
        groups, values = setup_task(lm, tokens_by_task["ioi"], "ioi", "mean")
        estimates.append(attribution_metrics(lm, groups[0], values.for_group(groups[0])))
    full, mixed = estimates
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    assert (mixed != 0).all(dim=(1, 2)).any() and (full - mixed).abs().max() < 0.05 * full.abs().max()


def test_precision_is_stated_in_words() -> None:
    assert precision_words("float32") == "float32"
    assert precision_words("bfloat16").startswith("mixed bfloat16: the blocks' matrix products in bfloat16")
    assert precision_words("float32", tf32=True, device="cuda:0") == "float32; TF32 matrix products"
    assert precision_words("float32", tf32=True, device="cpu") == "float32"
