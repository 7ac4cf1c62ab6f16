"""The exact sweep against a naive reference, and ablations with a known answer."""

from __future__ import annotations

import pytest
import torch
from conftest import setup_task as _setup
from rounding import assert_measurable, assert_within_rounding, rounding_floor
from tiny_models import TINY_FAMILIES, tiny_model
from transformers.pytorch_utils import Conv1D

from ioi_anti.measure.ablation import (
    ABLATIONS,
    AblationValues,
    ablated_layer_metrics,
    attribution_metrics,
    clean_pass,
    make_groups,
    reference_layer_metrics,
)
from ioi_anti.measure.sweep import baseline_table, task_gaps


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("kind", ABLATIONS)
def test_fast_sweep_equals_naive_reference(family, kind, smol_tokenizer, tokens_by_task) -> None:
    lm = tiny_model(family, smol_tokenizer)
    for task, tokens in tokens_by_task.items():
        groups, values = _setup(lm, tokens, task, kind)
        for group in groups[:2]:
            clean = clean_pass(lm, group, keep_resid=True, keep_z=False)
            v = values.for_group(group)
            for layer in range(lm.n_layers):
                fast = ablated_layer_metrics(lm, clean, v[layer], layer, max_rows=2 * group.size)
                naive = reference_layer_metrics(lm, group, v[layer], layer)
                torch.testing.assert_close(fast, naive, atol=1e-4, rtol=1e-4)
                assert not torch.allclose(naive, clean.metric.expand_as(naive), atol=1e-6), "ablation did nothing"


def _half_precision_deltas(half, full, tokens, task: str, layers, gap: float = 1.0,
                           max_batch: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Δ of every head of ``layers`` (mean effect over one group's prompts, over ``gap``) three ways: the
    fast replay and the naive reference in ``half``'s reduced precision, and the fast replay in float32
    (``full``: the same weights; exact against the naive reference in the tests above). All use the
    reduced-precision model's ablation values, so only the arithmetic differs."""
    groups, values = _setup(half, tokens, task, "mean", max_batch=max_batch)
    group, v = groups[0], values.for_group(groups[0])
    clean_half = clean_pass(half, group, keep_resid=True, keep_z=False)
    clean_full = clean_pass(full, group, keep_resid=True, keep_z=False)
    fast, naive, exact = [], [], []
    for layer in layers:
        naive_metrics = reference_layer_metrics(half, group, v[layer], layer)
        assert not torch.allclose(naive_metrics, clean_half.metric.expand_as(naive_metrics), atol=1e-4), \
            f"L{layer}: no effect"
        naive.append(naive_metrics - clean_half.metric)
        fast.append(ablated_layer_metrics(half, clean_half, v[layer], layer) - clean_half.metric)
        exact.append(ablated_layer_metrics(full, clean_full, v[layer].float(), layer) - clean_full.metric)
    return tuple(torch.stack(effects).mean(-1) / gap for effects in (fast, naive, exact))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_fast_sweep_equals_naive_reference_in_bfloat16(family, smol_tokenizer, tokens_by_task) -> None:
    """Both sides in mixed bfloat16: the replay must not change what a bfloat16 forward pass computes,
    beyond bfloat16's own rounding here (tests/rounding.py). Raw effects (a random model's gap means
    nothing), of weights drawn 5 times wider than the config's, whose effects are 15-126 rounding
    floors (at the default width, anti-repetition's were as few as 5). On the Xeon of
    docs/performance.md both paths were at most 6e-7 apart, with or without AMX (products this small
    take the same kernels); other CPUs may block them differently."""
    half, full = (tiny_model(family, smol_tokenizer, precision=p, initializer_range=0.1)
                  for p in ("bfloat16", "float32"))
    for task, tokens in tokens_by_task.items():
        fast, naive, exact = _half_precision_deltas(half, full, tokens, task, range(half.n_layers))
        floor = rounding_floor(naive, exact)
        assert_within_rounding(fast, naive, floor, f"{family} {task}: fast vs naive bfloat16 effects")
        assert_measurable(exact, floor)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_ablating_a_head_to_its_own_value_changes_nothing(family, smol_tokenizer, tokens_by_task) -> None:
    lm = tiny_model(family, smol_tokenizer)
    group = make_groups(tokens_by_task["ioi"][tokens_by_task["ioi"]["role"] == "clean"], lm.device)[0]
    clean = clean_pass(lm, group, keep_resid=True, keep_z=True)
    for layer in range(lm.n_layers):
        ablated = ablated_layer_metrics(lm, clean, clean.z[layer], layer)
        torch.testing.assert_close(ablated, clean.metric.expand_as(ablated), atol=1e-5, rtol=0)
    attribution = attribution_metrics(lm, group, clean.z)
    torch.testing.assert_close(attribution, torch.zeros_like(attribution))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_head_with_zeroed_output_projection_has_no_zero_ablation_effect(family, smol_tokenizer, tokens_by_task):
    lm = tiny_model(family, smol_tokenizer)
    layer, head, d_head = 1, 2, lm.d_head
    o_proj = lm.bridge.blocks[layer].attn.o.original_component
    columns = slice(head * d_head, (head + 1) * d_head)
    with torch.no_grad():
        if isinstance(o_proj, Conv1D):  # GPT-2 stores the projection transposed: [in, out]
            o_proj.weight[columns, :] = 0
        else:
            o_proj.weight[:, columns] = 0
    group = make_groups(tokens_by_task["anti"][tokens_by_task["anti"]["role"] == "clean"], lm.device)[0]
    clean = clean_pass(lm, group, keep_resid=True, keep_z=False)
    zeros = AblationValues("zero", lm, [], seed=0).for_group(group)
    ablated = ablated_layer_metrics(lm, clean, zeros[layer], layer)
    torch.testing.assert_close(ablated[head], clean.metric, atol=1e-5, rtol=0)
    assert not torch.allclose(ablated[(head + 1) % lm.n_heads], clean.metric, atol=1e-5)


def _check_attribution_on_small_moves(lm, tokens, task: str, layers, max_batch: int = 6) -> None:
    """At every given layer, attribution equals the exact effect of moving each head's z 1 % of the
    way to its ablation value (first order is exact there). A gradient that misses the paths through
    later layers' attention fails this below the last layer."""
    groups, values = _setup(lm, tokens, task, "mean", max_batch=max_batch)
    group = groups[0]
    clean = clean_pass(lm, group, keep_resid=True, keep_z=True)
    v = clean.z + 0.01 * (values.for_group(group) - clean.z)
    attribution = attribution_metrics(lm, group, v)
    # float32 rounding of the exact effect (the difference of two metrics), measured as the distance
    # of two exact float32 paths (fast replay vs naive forward, the tests above): up to 1.2e-5 on the
    # embedded models, whose residual streams are large (Gemma-3's in the hundreds), and ~3e-8 on the
    # tiny ones (metrics ~0.2: a few float32 ulps); float32 products do not take AMX kernels. The noise
    # allowed is about 4 times that. Attribution is then held to 2 % of the layer's largest effect.
    noise = 5e-5 if lm.d_head > 8 else 1e-7
    scales = []
    for layer in layers:
        exact = ablated_layer_metrics(lm, clean, v[layer], layer) - clean.metric
        scales.append(float(exact.abs().max()))
        torch.testing.assert_close(attribution[layer], exact, atol=0.02 * scales[-1] + noise, rtol=0.05,
                                   msg=lambda m, layer=layer: f"layer {layer}: {m}")
    assert sorted(scales)[len(scales) // 2] > 10 * noise, "the moves are too small to test anything"


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("task", ["ioi", "anti"])
def test_attribution_patching_is_first_order_exact_at_every_layer(family, task, smol_tokenizer,
                                                                  tokens_by_task) -> None:
    lm = tiny_model(family, smol_tokenizer)
    _check_attribution_on_small_moves(lm, tokens_by_task[task], task, range(lm.n_layers))


@pytest.mark.integration
def test_attribution_patching_is_first_order_exact_on_embedded_models(smol, tokens_by_task, gemma,
                                                                      gemma_tokens_by_task) -> None:
    for lm, tokens in ((smol, tokens_by_task), (gemma, gemma_tokens_by_task)):
        for task in ("ioi", "anti"):
            _check_attribution_on_small_moves(lm, tokens[task], task, range(lm.n_layers), max_batch=3)


def test_unknown_ablation_and_missing_template_are_errors(smol_tokenizer, tokens_by_task) -> None:
    lm = tiny_model("llama", smol_tokenizer)
    with pytest.raises(ValueError, match="Unknown ablation 'shuffle'"):
        AblationValues("shuffle", lm, [], seed=0)
    group = make_groups(tokens_by_task["ioi"][tokens_by_task["ioi"]["role"] == "clean"], lm.device)[0]
    with pytest.raises(ValueError, match="No pool prompts for template"):
        AblationValues("mean", lm, [], seed=0).for_group(group)


def _check_fast_against_naive(lm, tokens_by_task, layers) -> None:
    for task, tokens in tokens_by_task.items():
        groups, values = _setup(lm, tokens, task, "mean", max_batch=4)
        group = groups[0]
        clean = clean_pass(lm, group, keep_resid=True, keep_z=False)
        v = values.for_group(group)
        for layer in layers:
            fast = ablated_layer_metrics(lm, clean, v[layer], layer)
            naive = reference_layer_metrics(lm, group, v[layer], layer)
            torch.testing.assert_close(fast, naive, atol=2e-3, rtol=1e-3)
            assert not torch.allclose(naive, clean.metric.expand_as(naive), atol=1e-4), f"L{layer}: no effect"


@pytest.mark.integration
def test_fast_sweep_equals_reference_on_embedded_model(smol, tokens_by_task) -> None:
    _check_fast_against_naive(smol, tokens_by_task, range(smol.n_layers))


@pytest.mark.integration
@pytest.mark.parametrize("model", ["smol", "gemma"])
def test_fast_sweep_equals_reference_on_embedded_models_in_bfloat16(model, request, tokens_by_task,
                                                                     gemma_tokens_by_task) -> None:
    """Every layer, both sides in mixed bfloat16, compared as the study uses them: Δ normalised by the
    task gap, within twice the bfloat16 rounding floor measured here (naive bfloat16 against float32;
    tests/rounding.py). Measured on the Xeon of docs/performance.md: with AMX the floor was 0.0125
    (SmolLM2) and 0.0142 (Gemma-3) and the paths 0.0166 and 0.0126 apart; without AMX, floors of
    0.0104 and 0.0155 and the paths identical. The largest |Δ| (0.60 and 0.51) spans 16-24
    tolerances, so a replay that computed something else would fail. IOI prompts only: the replay does
    not depend on the task, and both tasks run in float32 above."""
    half, full = request.getfixturevalue(f"{model}_bf16"), request.getfixturevalue(model)
    assert half.precision == "bfloat16"
    tokens = (tokens_by_task if model == "smol" else gemma_tokens_by_task)["ioi"]
    gap = task_gaps(baseline_table(full, tokens, max_batch=16))["ioi"]
    fast, naive, exact = _half_precision_deltas(half, full, tokens, "ioi", range(half.n_layers), gap, max_batch=4)
    floor = rounding_floor(naive, exact)
    assert_within_rounding(fast, naive, floor, f"{model}: Δ of the fast and naive bfloat16 sweeps")
    assert_measurable(exact, floor)


@pytest.mark.integration
def test_fast_sweep_equals_reference_on_embedded_gemma(gemma, gemma_tokens_by_task) -> None:
    """Every layer of Gemma-3-270M: sliding-window layers and the global layers 5, 11 and 17."""
    layer_types = gemma.bridge.original_model.config.layer_types
    assert (layer_types[4], layer_types[5], layer_types[17]) == ("sliding_attention", "full_attention",
                                                                  "full_attention")
    _check_fast_against_naive(gemma, gemma_tokens_by_task, range(gemma.n_layers))
