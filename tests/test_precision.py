"""Mixed precision (``runtime.dtype: bfloat16``): what runs in the half type, what stays float32, and
that every pass of the measurement honours it."""

from __future__ import annotations

import pytest
import torch
from conftest import setup_task
from rounding import assert_within_rounding, products_bound, rounding_floor
from tiny_models import TINY_FAMILIES, tiny_model
from torch import Tensor

from ioi_anti.hero import effects as hero
from ioi_anti.measure.ablation import (
    CleanPass,
    ablated_layer_metrics,
    attention_patterns,
    attribution_metrics,
    clean_pass,
    make_groups,
)
from ioi_anti.models.loading import LoadedModel
from ioi_anti.models.precision import MATRIX_LAYERS, matrix_dtype, precision_words


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
    # Measured on the Xeon of docs/performance.md: 0.001-0.007 of the scale; the bound is ~0.05.
    assert 0 < gap < products_bound(mixed) * scale, "bfloat16 did not act, or acted beyond its rounding"


@pytest.mark.parametrize("family", ["gpt2", "gemma"])
def test_attribution_in_bfloat16_is_close_to_float32(family, smol_tokenizer, tokens_by_task) -> None:
    """The backward pass goes through the half-precision layers too (gradients reach every layer), and
    lands within the worst case of rounding every product's output in both passes (measured on the
    Xeon of docs/performance.md: 0.0066 and 0.020 of the scale, against a bound of ~0.09)."""
    estimates = []
    for precision in ("float32", "bfloat16"):
        lm = tiny_model(family, smol_tokenizer, precision=precision)
        groups, values = setup_task(lm, tokens_by_task["ioi"], "ioi", "mean")
        estimates.append(attribution_metrics(lm, groups[0], values.for_group(groups[0])))
    full, mixed = estimates
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    assert (mixed != 0).all(dim=(1, 2)).any()
    assert 0 < (full - mixed).abs().max() < products_bound(lm, passes=2) * full.abs().max()


def _sweep_metrics(lm: LoadedModel, clean: CleanPass, values: Tensor) -> Tensor:
    """The clean metric and the metric with each head of each layer ablated: plain replays whose
    distance from float32 is the rounding floor the hero measurements are held to."""
    return torch.cat([clean.metric[None], *(ablated_layer_metrics(lm, clean, values[layer], layer)
                                            for layer in range(lm.n_layers))])


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_hero_studies_run_in_bfloat16_and_agree_with_float32(family, smol_tokenizer, tokens_by_task) -> None:
    """Every hero measurement (contribution, all paths, dose-response, joint ablation of several heads of
    a layer, receiver paths, the first-reader decomposition with head groups, attention from END) in
    mixed bfloat16: float32 results, as far from the float32 ones as bfloat16 rounding puts the sweep's
    own replays, within tests/rounding.py's tolerance (measured on the Xeon of docs/performance.md, with
    and without AMX: at most 1.7 floors, on tiny Gemma-3; the attention within its patterns' floor; a
    joint ablation of two heads of one layer failed on a dtype mismatch in the rotary families before
    the fix)."""
    groups = {"even": [(r, h) for r in range(3) for h in (0, 2)], "odd": [(r, h) for r in range(3) for h in (1, 3)]}
    results, sweeps, patterns = [], [], []
    full_model = tiny_model(family, smol_tokenizer)
    task_groups, values = setup_task(full_model, tokens_by_task["ioi"], "ioi", "mean")
    v = values.for_group(task_groups[0])  # the same ablation values in both precisions: only arithmetic differs
    for lm in (full_model, tiny_model(family, smol_tokenizer, precision="bfloat16")):
        clean = clean_pass(lm, task_groups[0], keep_resid=True, keep_z=True)
        sweeps.append(_sweep_metrics(lm, clean, v))
        patterns.append(attention_patterns(lm, task_groups[0]))
        delta_out = hero.contribution(lm, clean, 0, 1, v[0][:, :, 1])
        out = {
            "all paths": hero.all_paths_metric(lm, clean, 0, delta_out),
            "dose": hero.dose_response(lm, clean, 0, 1, clean.z[0][:, :, 1], v[0][:, :, 1], [0.0, 0.5, 1.0]),
            "joint": hero.joint_ablation(lm, clean, v, [(1, 0), (1, 2), (2, 3)]),
            **{f"receiver {key}": m for key, m in hero.receiver_metrics(lm, clean, delta_out, 2, heads=[0, 3]).items()},
            **{f"{p.reader} {p.layer} {p.heads}": p.metric for p in hero.decompose(lm, clean, 0, delta_out, groups)},
        }
        results.append((out, torch.from_numpy(hero.attention_from_end(lm, clean, 1, 2))))
    (full, full_attention), (mixed, mixed_attention) = results
    assert mixed.keys() == full.keys()
    floor = rounding_floor(sweeps[1], sweeps[0])
    for name, value in mixed.items():
        assert value.dtype == torch.float32, name
        assert_within_rounding(value, full[name], floor, f"{family} {name}, bfloat16 vs float32")
    assert mixed_attention.dtype == torch.float32
    assert_within_rounding(mixed_attention, full_attention, rounding_floor(patterns[1], patterns[0]),
                           f"{family} attention from END, bfloat16 vs float32")


def test_precision_is_stated_in_words() -> None:
    assert precision_words("float32") == "float32"
    assert precision_words("bfloat16").startswith("mixed bfloat16: the blocks' matrix products in bfloat16")
    assert precision_words("float32", tf32=True, device="cuda:0") == "float32; TF32 matrix products"
    assert precision_words("float32", tf32=True, device="cpu") == "float32"
