"""The per-head table from per-prompt effects: Delta, intervals, grid validation, agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from base_params import settings

from ioi_anti.measure.head_table import attribution_agreement, model_head_table
from ioi_anti.measure.sweep import Screen, screen_selection
from ioi_anti.params import Registry
from ioi_anti.tasks import PAIR

N_LAYERS, N_HEADS, N_PROMPTS = 2, 3, 6
N_BOOT, CI = 500, 0.95


def _inputs(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    baseline = pd.DataFrame([
        {"task": task, "pair_id": i, "m_clean": 3.0 + rng.normal(), "m_ref": rng.normal(), "model_id": "tiny",
         "family": "gpt2", "tuning": "base", "quantisation": "none",
         "n_params": 1000, "n_layers": N_LAYERS, "n_heads": N_HEADS}
        for task in ("ioi", "anti") for i in range(N_PROMPTS)
    ])
    long = pd.DataFrame([
        {"task": task, "layer": layer, "head": head, "pair_id": i, "method": method,
         "effect": -0.1 * (layer * N_HEADS + head) + 0.05 * rng.normal()}
        for task in ("ioi", "anti") for method in ("exact", "attribution")
        for layer in range(N_LAYERS) for head in range(N_HEADS) for i in range(N_PROMPTS)
    ])
    return long, baseline


def test_delta_is_mean_effect_over_mean_gap_with_an_interval() -> None:
    long, baseline = _inputs()
    table = model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0)
    assert len(table) == N_LAYERS * N_HEADS and table["gap_ok"].all()
    for task in ("ioi", "anti"):
        base = baseline[baseline["task"] == task]
        gap = (base["m_clean"] - base["m_ref"]).mean()
        exact = long[(long["task"] == task) & (long["method"] == "exact")]
        expected = exact.groupby(["layer", "head"])["effect"].mean().to_numpy() / gap
        np.testing.assert_allclose(table[f"delta_{task}"], expected, rtol=1e-9)
        assert (table[f"delta_{task}_low"] <= table[f"delta_{task}"]).all()
        assert (table[f"delta_{task}"] <= table[f"delta_{task}_high"]).all()
        assert table[f"gap_{task}"].iloc[0] == pytest.approx(gap)


def test_raw_delta_is_the_mean_effect_itself_with_the_gap_still_reported() -> None:
    """``head_ablation.delta: raw`` (the published protocol): Δ in logits, not divided by the gap."""
    long, baseline = _inputs()
    normalised = model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0)
    raw = model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0, unit="raw")
    assert set(raw["delta_unit"]) == {"raw"} and set(normalised["delta_unit"]) == {"normalised"}
    for task in ("ioi", "anti"):
        exact = long[(long["task"] == task) & (long["method"] == "exact")]
        np.testing.assert_allclose(raw[f"delta_{task}"], exact.groupby(["layer", "head"])["effect"].mean(), rtol=1e-9)
        np.testing.assert_allclose(raw[f"delta_{task}"], normalised[f"delta_{task}"] * raw[f"gap_{task}"], rtol=1e-9)
        assert (raw[f"delta_{task}_low"] <= raw[f"delta_{task}"]).all()
        assert (raw[f"delta_{task}"] <= raw[f"delta_{task}_high"]).all()
        assert (raw[f"gap_{task}"] == normalised[f"gap_{task}"]).all() and (raw[f"gap_{task}"] != 1.0).all()
    baseline.loc[baseline["task"] == "anti", "m_ref"] = baseline["m_clean"] + 1.0  # a negative gap
    assert model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0, unit="raw")["gap_ok"].all()
    assert not model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0)["gap_ok"].any()


def test_a_model_whose_gap_is_not_positive_is_flagged() -> None:
    long, baseline = _inputs()
    baseline.loc[baseline["task"] == "anti", "m_ref"] = baseline["m_clean"] + 1.0
    assert not model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0)["gap_ok"].any()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda long: long[~((long["layer"] == 1) & (long["head"] == 2))], "misses 1 heads"),
    (lambda long: pd.concat([long, long.assign(layer=N_LAYERS)]), "outside the 2x3 grid"),
    (lambda long: pd.concat([long, long[long["layer"] == 0]]), "other than 6 prompts"),
])
def test_the_grid_is_validated_against_the_model_config(edit, message: str) -> None:
    long, baseline = _inputs()
    with pytest.raises(ValueError, match=message):
        model_head_table(edit(long), baseline, PAIR, N_BOOT, CI, seed=0)


def test_attribution_agreement_over_all_and_top_heads() -> None:
    long, baseline = _inputs()
    table = model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0)
    perfect = table.assign(attr_delta_ioi=table["delta_ioi"] * 2, attr_delta_anti=-table["delta_anti"])
    rows = {(row["task"], row["tau"]): row for row in attribution_agreement(perfect, PAIR, [0.03, 0.05])}
    ioi, anti = rows[("ioi", 0.05)], rows[("anti", 0.05)]
    assert ioi["spearman"] == pytest.approx(1.0) and anti["spearman"] == pytest.approx(-1.0)
    assert ioi["pearson"] == pytest.approx(1.0) and anti["pearson"] == pytest.approx(-1.0)
    assert ioi["n_top"] == N_LAYERS * N_HEADS
    assert ioi["recall_at_k"] == 1.0 and ioi["sign_agreement"] == 1.0
    assert anti["recall_at_k"] == 1.0 and anti["sign_agreement"] == 0.0  # right heads, every sign wrong


def test_recall_counts_strong_heads_found_among_the_top_k_estimates() -> None:
    long, baseline = _inputs()
    table = model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0)
    strongest = table["delta_ioi"].abs().idxmax()
    hidden = table.assign(attr_delta_ioi=table["delta_ioi"].where(table.index != strongest, 0.0))
    n_strong = int((table["delta_ioi"].abs() >= 0.05).sum())
    row = next(r for r in attribution_agreement(hidden, PAIR, [0.05]) if r["task"] == "ioi")
    assert row["n_strong"] == n_strong and row["recall_at_k"] == pytest.approx((n_strong - 1) / n_strong)


def test_screened_table_uses_exact_values_where_measured_and_estimates_elsewhere() -> None:
    long, baseline = _inputs()
    measured = {"ioi": [(0, 1), (1, 2)], "anti": [(1, 2), (1, 0)]}
    head = pd.Series(list(zip(long["layer"], long["head"], strict=True)))
    keep = long["method"] == "attribution"
    for task, heads in measured.items():
        keep |= ((long["method"] == "exact") & (long["task"] == task)).to_numpy() & head.isin(heads).to_numpy()
    table = model_head_table(long[keep], baseline, PAIR, N_BOOT, CI, seed=0, exact_heads=measured)
    full = model_head_table(long, baseline, PAIR, N_BOOT, CI, seed=0)
    rows = pd.Series(list(zip(table["layer"], table["head"], strict=True)))
    for task, heads in measured.items():
        is_exact = rows.isin(heads).to_numpy()
        assert list(table[f"measured_by_{task}"]) == ["exact" if e else "estimate" for e in is_exact]
        np.testing.assert_allclose(table.loc[is_exact, f"delta_{task}"], full.loc[is_exact, f"delta_{task}"])
        np.testing.assert_allclose(table.loc[~is_exact, f"delta_{task}"], full.loc[~is_exact, f"attr_delta_{task}"])
        assert table[f"delta_{task}_low"].notna().all()
    agreement = pd.DataFrame(attribution_agreement(table, PAIR, [0.05])).set_index("task")
    assert agreement["n_heads"].to_dict() == {"ioi": 2, "anti": 2}
    assert agreement[["spearman", "pearson", "spearman_top"]].isna().all().all()  # two heads: no correlation
    with pytest.raises(ValueError, match="anti/exact misses 1 heads"):
        model_head_table(long[keep], baseline, PAIR, N_BOOT, CI, seed=0,
                         exact_heads=measured | {"anti": [(0, 0), (1, 0)]})


def test_screen_selection_takes_heads_near_tau_and_the_top_k_per_task() -> None:
    estimates = pd.DataFrame({"task": ["ioi"] * 4 + ["anti"] * 4, "layer": [0, 0, 1, 1] * 2,
                              "head": [0, 1, 0, 1] * 2,
                              "estimate": [0.001, -0.016, 0.2, 0.0, 0.0, 0.002, 0.0, 0.003]})
    assert screen_selection(estimates, Screen(tau_min=0.03, margin=0.015, top_k=0)) == {
        "ioi": [(0, 1), (1, 0)], "anti": []}
    assert screen_selection(estimates, Screen(tau_min=0.03, margin=0.01, top_k=0)) == {"ioi": [(1, 0)], "anti": []}
    assert screen_selection(estimates, Screen(tau_min=0.03, margin=0.01, top_k=1)) == {
        "ioi": [(1, 0)], "anti": [(1, 1)]}
    with pytest.raises(ValueError, match="margin must lie in"):
        Screen(tau_min=0.03, margin=0.05, top_k=0)


def test_tuning_comes_from_the_registry_even_where_a_saved_baseline_lacks_it() -> None:
    """Baselines saved before ``tuning`` was recorded keep their partition keys and are reused."""
    from ioi_anti.measure.partitions import baseline_key, fingerprint, partition_prefix
    from ioi_anti.measure.plan import partition_settings
    from ioi_anti.pipelines.data_generation.nodes import summarise_baselines
    from ioi_anti.pipelines.head_ablation.nodes import summarise_heads

    long, baseline = _inputs()
    old = baseline.drop(columns="tuning").assign(correct_clean=True)
    tokens = pd.DataFrame({"prompt_id": [0, 0], "task": ["ioi", "anti"], "role": ["clean"] * 2, "pair_id": [0, 0],
                           "template_id": [0, 0], "input_ids": [[1, 2]] * 2, "metric_token_ids": [[2]] * 2,
                           "metric_weights": [[1.0]] * 2})
    base = settings(runtime__device="cpu")
    runtime, sweep = base.runtime, base.head_ablation.model_copy(update={"n_boot": N_BOOT})
    registry = Registry.model_validate({"tiny": {"family": "gpt2", "source": "hub", "hf_name": "tiny",
                                                 "tuning": "instruct", "prepend_bos": True,
                                                 "quantisation": "none", "licence": "MIT"}})
    baselines, effects = {}, {}
    for task in ("ioi", "anti"):
        rows = tokens[tokens["task"] == task]
        baselines[baseline_key("tiny", rows, runtime)] = lambda task=task: old[old["task"] == task]
        prefix = partition_prefix("tiny", task, fingerprint("tiny", rows, partition_settings(runtime, sweep, None)))
        effects[f"{prefix}/layer_000"] = lambda task=task: long[long["task"] == task]
    summary = summarise_baselines(baselines, {"tiny": lambda: tokens}, ["tiny"], registry, runtime, seed=0, n_boot=50)
    assert set(summary["tuning"]) == {"instruct"}
    per_head, _agreement, metadata = summarise_heads(
        ["ioi", "anti"], effects, baselines, {"tiny": lambda: tokens}, {}, ["tiny"], registry, runtime,
        sweep, base.categorisation.model_copy(update={"sensitivity_taus": [0.03]}), base.quantisation, seed=0)
    assert set(per_head["tuning"]) == {"instruct"} and metadata["model_config"][0]["tuning"] == "instruct"
    assert per_head["quant_sensitive"].isna().all(), "not measured re-quantised: missing, not False"
