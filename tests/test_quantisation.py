"""Quantised weights: the GGUF round trip against a naive reference and a known answer, the tensors a model
quantises, and the comparison of a per-head table with its quantised measurement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from base_params import settings
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize
from tiny_models import tiny_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from ioi_anti.analysis.categories import PAPER_PAIR
from ioi_anti.analysis.quantisation import (
    accuracy_changes,
    head_changes,
    mark_quant_sensitive,
    model_effects,
    straddles,
)
from ioi_anti.execution import Job
from ioi_anti.measure import requantised
from ioi_anti.measure.requantised import saved_requantised
from ioi_anti.measure.sweep import Screen
from ioi_anti.models.loading import load_tokenizer
from ioi_anti.models.quantise import quantisable, quantise_weights, round_trip
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import GGUF_TYPES
from ioi_anti.report.quantisation import how_measured, verdict


def naive_q4_0(values: np.ndarray) -> np.ndarray:
    """llama.cpp's reference Q4_0 (``quantize_row_q4_0_ref`` and its de-quantiser), one block of 32 at a time:
    d = the block's value of largest magnitude / -8 (stored as float16), q = min(15, trunc(x/d + 8.5)),
    read back as (q - 8) * d."""
    out = np.empty_like(values, dtype=np.float32)
    for row in range(values.shape[0]):
        for start in range(0, values.shape[1], 32):
            block = values[row, start:start + 32].astype(np.float32)
            d = np.float32(block[np.argmax(np.abs(block))] / np.float32(-8))
            inverse = np.float32(1) / d if d else np.float32(0)
            q = np.minimum(15, (block * inverse + np.float32(8.5)).astype(np.int8))
            out[row, start:start + 32] = (q.astype(np.float32) - 8) * np.float32(np.float16(d))
    return out


def block_matrix() -> np.ndarray:
    """2 × 64: each block of 32 along a row is s × (-8, ..., 7, -8, ..., 7) with its own power of two s, which
    Q4_0 and Q4_1 represent exactly (d = s, and for Q4_1 the minimum -8s), block by block along the rows only."""
    steps = np.tile(np.arange(-8, 8, dtype=np.float32), 2)
    return np.array([[*(0.5 * steps), *(2.0 * steps)], [*(0.25 * steps), *(4.0 * steps)]], dtype=np.float32)


def test_the_round_trip_is_ggufs_own_and_llama_cpps_reference() -> None:
    values = np.random.default_rng(0).standard_normal((3, 96)).astype(np.float32)
    for name in GGUF_TYPES:
        kind = GGMLQuantizationType[name]
        np.testing.assert_array_equal(round_trip(values, name), dequantize(quantize(values, kind), kind))
    np.testing.assert_allclose(round_trip(values, "Q4_0"), naive_q4_0(values), rtol=0, atol=1e-6)
    errors = [np.abs(round_trip(values, name) - values).mean() for name in GGUF_TYPES]
    assert errors == sorted(errors) and errors[0] < 0.01 < errors[-1], "wider types are closer"
    with pytest.raises(ValueError, match="not a whole number of Q4_0 blocks of 32"):
        round_trip(values[:, :40], "Q4_0")
    with pytest.raises(ValueError, match="Unknown quantisation type 'Q6_K'"):
        round_trip(values, "Q6_K")


def test_blocks_run_along_the_input_dimension_of_linear_and_conv1d_weights() -> None:
    matrix = block_matrix()
    for name in ("Q4_0", "Q4_1"):
        np.testing.assert_array_equal(round_trip(matrix, name), matrix)
        assert not np.array_equal(round_trip(np.ascontiguousarray(matrix.reshape(4, 32).T.reshape(2, 64)), name),
                                  matrix.reshape(4, 32).T.reshape(2, 64)), "blocks across the scales are not exact"
    linear, conv = nn.Linear(64, 2), Conv1D(2, 64)  # Conv1D(nf=out, nx=in) stores (in, out)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(matrix))
        conv.weight.copy_(torch.from_numpy(matrix.T.copy()))
    model = nn.ModuleDict({"linear": linear, "conv": conv, "wpe": nn.Embedding(4, 64), "ln_f": nn.LayerNorm(64)})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    changes = quantise_weights(model, "Q4_0").set_index("tensor")
    assert set(changes.index) == {"linear.weight", "conv.weight"}, "no bias, norm or position embedding"
    assert (changes["rel_change"] == 0).all() and (changes["fresh_rel_change"] > 0.01).all()
    after = dict(model.named_parameters())
    for name in ("wpe.weight", "ln_f.weight", "linear.bias", "conv.bias"):
        assert torch.equal(after[name], before[name]), name
    random = nn.Linear(64, 8)
    original = random.weight.detach().clone()
    change = quantise_weights(random, "Q4_0").iloc[0]
    assert 0.05 < change["rel_change"] < 0.2 and change["fresh_rel_change"] == pytest.approx(change["rel_change"],
                                                                                              rel=0.3)
    np.testing.assert_array_equal(random.weight.detach().numpy(), round_trip(original.numpy(), "Q4_0"))


def test_what_llama_cpp_quantises() -> None:
    matrix, vector = torch.zeros(4, 32), torch.zeros(32)
    assert quantisable("model.layers.0.self_attn.q_proj.weight", matrix)
    assert quantisable("transformer.wte.weight", matrix)
    assert not quantisable("transformer.wpe.weight", matrix) and not quantisable("model.decoder.embed_positions.weight",
                                                                                 matrix)
    assert not quantisable("model.norm.weight", vector) and not quantisable("lm_head.bias", vector)


def _heads(deltas: dict[str, list[float]], width: float, model: str = "m") -> pd.DataFrame:
    """A per-head table of one model with the given Δ of both paper tasks and intervals of ± ``width``."""
    n = len(deltas["ioi"])
    table = pd.DataFrame({"model": model, "family": "gpt2", "tuning": "base", "quantisation": "none",
                          "n_params": 1, "n_layers": 1, "n_heads": n, "ablation": "mean", "gap_ok": True,
                          "layer": 0, "head": range(n)})
    for task, values in deltas.items():
        table[f"delta_{task}"] = values
        table[f"delta_{task}_low"] = np.array(values) - width
        table[f"delta_{task}_high"] = np.array(values) + width
    return table


def test_a_head_that_crosses_tau_changes_category_and_says_whether_its_interval_settled_it() -> None:
    reference = _heads({"ioi": [-0.40, -0.105, 0.0, -0.30], "anti": [0.0, 0.0, -0.02, -0.30]}, width=0.01)
    quantised = _heads({"ioi": [-0.41, -0.095, 0.0, -0.30], "anti": [0.0, 0.0, -0.12, -0.31]}, width=0.01)
    heads = head_changes(reference, quantised.assign(quantised_to="Q4_0"), 0.1, PAPER_PAIR)
    assert heads["changed"].tolist() == [False, True, True, False]
    assert heads["straddling"].tolist() == [False, True, False, False], "only head 1's interval contains τ"
    assert straddles(reference, "ioi", 0.1).tolist() == [False, True, False, False]
    effects = model_effects(heads, PAPER_PAIR).iloc[0]
    assert effects["n_changed"] == 2 and effects["n_changed_settled"] == 1 and effects["changed_heads"] == "L0H1, L0H2"
    assert effects["max_abs_change_anti"] == pytest.approx(0.10)
    assert effects["max_abs_change_ioi"] == pytest.approx(0.01)
    assert effects["pearson_ioi"] > 0.99 and effects["r_change"] == pytest.approx(
        np.corrcoef(quantised["delta_ioi"], quantised["delta_anti"])[0, 1]
        - np.corrcoef(reference["delta_ioi"], reference["delta_anti"])[0, 1])
    with pytest.raises(ValueError, match="no `quantised_to` column"):
        head_changes(reference, quantised, 0.1, PAPER_PAIR)


def test_the_accuracy_change_is_the_largest_fall_over_kinds() -> None:
    reference = pd.DataFrame({"model": "m", "kind": ["ioi", "list"], "accuracy": [1.0, 0.95]})
    quantised = pd.DataFrame({"model": "m", "quantised_to": ["Q8_0", "Q8_0", "Q4_0", "Q4_0"],
                              "kind": ["ioi", "list"] * 2, "accuracy": [1.0, 0.95, 0.9, 0.95]})
    changes = accuracy_changes(reference, quantised).set_index("quantised_to")
    assert changes.at["Q8_0", "accuracy_change"] == 0 and changes.at["Q4_0", "accuracy_change"] == pytest.approx(-0.1)
    assert changes.at["Q4_0", "accuracy_kind"] == "ioi"


def test_per_head_marks_the_heads_re_quantisation_moves_and_leaves_unmeasured_models_missing() -> None:
    reference = pd.concat([_heads({"ioi": [-0.40, -0.105, 0.0], "anti": [0.0, 0.0, -0.02]}, 0.01),
                           _heads({"ioi": [-0.40], "anti": [0.0]}, 0.01, model="other")], ignore_index=True)
    quantised = _heads({"ioi": [-0.41, -0.095, 0.0], "anti": [0.0, 0.0, -0.12]}, 0.01).assign(quantised_to="Q4_0")
    marked = mark_quant_sensitive(reference, quantised, 0.1, PAPER_PAIR)
    assert str(marked["quant_sensitive"].dtype) == "boolean"
    flags = marked["quant_sensitive"]
    assert flags.tolist()[:3] == [False, True, True]
    assert flags.isna().tolist() == [False, False, False, True], "a model not measured re-quantised: missing, not False"
    assert mark_quant_sensitive(reference, None, 0.1, PAPER_PAIR)["quant_sensitive"].isna().all()
    assert marked.drop(columns="quant_sensitive").equals(reference), "nothing else changes"


def test_only_intact_partitions_saved_for_these_settings_are_read(caplog: pytest.LogCaptureFixture) -> None:
    tables = {"heads": _heads({"ioi": [0.0], "anti": [0.0]}, 0.01), "tensors": pd.DataFrame({"name": ["w"]})}
    plan = {f"{m}/Q4_0-abc": Job(m, print, ()) for m in ("good", "damaged", "unmeasured")}

    def damaged() -> dict:
        raise EOFError("truncated")

    done = {"good/Q4_0-abc": lambda: tables, "damaged/Q4_0-abc": damaged, "good/Q4_0-old": lambda: tables}
    assert list(saved_requantised(done, plan)) == ["good"]
    assert "damaged/Q4_0-abc is damaged (truncated)" in caplog.text


def test_a_screening_runs_re_quantised_sweep_measures_exactly_what_its_own_estimates_select(
        tokens_by_task: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    """In a ``screen`` run (``--env scale``) the re-quantised copy is screened like the reference: the heads its
    own attribution estimates select are measured exactly (the values of an exact sweep of the same weights),
    the rest keep their estimates; the key tells the two modes apart."""
    base = settings(runtime__device="cpu", head_ablation__n_boot=50)
    lm = tiny_model("llama", load_tokenizer(ModelSpec.from_registry("smollm2-135m", base.model_registry)),
                    initializer_range=0.2)
    monkeypatch.setattr(requantised, "load_quantised", lambda *_: (lm, pd.DataFrame({"name": ["w"]})))
    tokens = pd.concat(tokens_by_task.values(), ignore_index=True)
    runtime, params = base.runtime, base.head_ablation
    screen = Screen(tau_min=0.05, margin=0.01, top_k=2)
    measure = lambda rule: requantised.measure_requantised(  # noqa: E731
        lm.spec, tokens, ("ioi", "anti"), runtime, params, rule, "Q4_0", 0)["heads"].set_index(["layer", "head"])
    exact, screened = measure(None), measure(screen)
    assert set(exact["mode"]) == {"exact"} and set(screened["mode"]) == {"screen"}
    for task in ("ioi", "anti"):
        chosen = screened[f"measured_by_{task}"] == "exact"
        estimate = screened[f"attr_delta_{task}"].abs()
        assert 2 <= chosen.sum() < len(screened), task
        assert (chosen | (estimate < screen.tau_min - screen.margin)).all(), "an unselected head could reach τ"
        # the same passes (0 apart here); float32 leaves ~1e-6 of a logit, ~3e-6 of Δ at this model's gaps of
        # ~0.3, so 1e-5 admits another machine's kernels, far below the Δ of a wrong head (up to 0.6 here)
        np.testing.assert_allclose(screened.loc[chosen, f"delta_{task}"], exact.loc[chosen, f"delta_{task}"],
                                   rtol=0, atol=1e-5)
        estimated = screened[~chosen]
        np.testing.assert_array_equal(estimated[f"delta_{task}"], estimated[f"attr_delta_{task}"])
    keys = {rule: requantised.requantised_key(lm.spec, tokens, runtime, params, rule, "Q4_0", 0)
            for rule in (None, screen)}
    assert len(set(keys.values())) == 2


def test_the_report_says_how_the_re_quantised_copies_were_measured() -> None:
    exact, screened = pd.DataFrame({"mode": ["exact"] * 2}), pd.DataFrame({"mode": ["screen", "screen"]})
    assert how_measured(exact) == "every head is measured again exactly"
    assert "by screening" in how_measured(screened) and "exactly" in how_measured(screened)


def test_the_verdict_counts_borderline_heads_in_words() -> None:
    effects = pd.DataFrame({"model": ["one", "two"], "n_changed": [1, 5], "n_changed_settled": [0, 0],
                            "r_change": [-0.001, 0.056]})
    heads = pd.DataFrame({"model": ["one"], "layer": [18], "head": [9], "changed": [True], "category_ref": ["weak"],
                          "category": ["IOI-only"]})
    one, two = verdict(effects, heads, PAPER_PAIR)
    assert "(1 borderline head does)" in one and "the correlation robust (r changes by -0.001)" in one
    assert "(5 borderline heads do)" in two and "**not robust** (r changes by +0.056, more than 0.05)" in two
