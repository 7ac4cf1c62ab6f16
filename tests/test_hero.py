"""Hero-head mechanics on tiny models, in the cases with a known answer."""

from __future__ import annotations

import pytest
import torch
from conftest import setup_task as _setup
from tiny_models import TINY_FAMILIES, tiny_model

from ioi_anti import hero
from ioi_anti.ablation import ablated_layer_metrics, clean_pass


def _hero_setup(family, smol_tokenizer, tokens, task="ioi"):
    lm = tiny_model(family, smol_tokenizer)
    groups, values = _setup(lm, tokens, task, "mean")
    clean = clean_pass(lm, groups[0], keep_resid=True, keep_z=True)
    return lm, clean, values.for_group(groups[0])


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_patching_every_path_at_once_recovers_the_total_effect(family, smol_tokenizer, tokens_by_task) -> None:
    lm, clean, values = _hero_setup(family, smol_tokenizer, tokens_by_task["ioi"])
    for layer in range(lm.n_layers):
        head = layer % lm.n_heads
        total = ablated_layer_metrics(lm, clean, values[layer], layer)[head]
        delta_out = hero.contribution(lm, clean, layer, head, values[layer][:, :, head])
        torch.testing.assert_close(hero.all_paths_metric(lm, clean, layer, delta_out), total, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["pythia", "gemma"])
def test_last_layer_head_direct_effect_equals_total_effect(family, smol_tokenizer, tokens_by_task) -> None:
    """Nothing but the logits reads a last-layer head: in a parallel attention/MLP block (GPT-NeoX),
    and in Gemma's block once its last MLP is silenced. Gemma normalises the attention output
    before adding it to the residual, so this fails unless the contribution is taken after that norm."""
    lm, clean, values = _hero_setup(family, smol_tokenizer, tokens_by_task["anti"], "anti")
    layer = lm.n_layers - 1
    if family == "gemma":
        with torch.no_grad():
            lm.bridge.blocks[layer].mlp.out.original_component.weight.zero_()
        clean = clean_pass(lm, clean.group, keep_resid=True, keep_z=True)
    for head in range(lm.n_heads):
        total = ablated_layer_metrics(lm, clean, values[layer], layer)[head]
        delta_out = hero.contribution(lm, clean, layer, head, values[layer][:, :, head])
        torch.testing.assert_close(hero.direct_metric(lm, clean, delta_out), total, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(total, clean.metric, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_dose_response_runs_from_clean_to_fully_ablated(family, smol_tokenizer, tokens_by_task) -> None:
    lm, clean, values = _hero_setup(family, smol_tokenizer, tokens_by_task["ioi"])
    layer, head = 1, 3
    curve = hero.dose_response(lm, clean, layer, head, clean.z[layer][:, :, head], values[layer][:, :, head],
                               [0.0, 0.5, 1.0])
    torch.testing.assert_close(curve[0], clean.metric, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(curve[-1], ablated_layer_metrics(lm, clean, values[layer], layer)[head],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_receiver_paths_and_joint_ablation(family, smol_tokenizer, tokens_by_task) -> None:
    lm, clean, values = _hero_setup(family, smol_tokenizer, tokens_by_task["ioi"])
    delta_out = hero.contribution(lm, clean, 0, 1, values[0][:, :, 1])
    paths = hero.receiver_metrics(lm, clean, delta_out, 2, heads=[0, 3])
    assert set(paths) == {(h, k) for h in (0, 3) for k in hero.QKV}
    zero = hero.receiver_metrics(lm, clean, torch.zeros_like(delta_out), 2, heads=[0])
    for metric in zero.values():
        torch.testing.assert_close(metric, clean.metric, atol=1e-5, rtol=1e-5)
    single = hero.joint_ablation(lm, clean, values, [(1, 2)])
    torch.testing.assert_close(single, ablated_layer_metrics(lm, clean, values[1], 1)[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hero.joint_ablation(lm, clean, values, []), clean.metric)
