"""Categorisation: τ validation, strong/robust flags, categories, counts, correlations, grid checks."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr
from synthetic import FOUR_MODELS, SINGLE_MODEL, SyntheticModel, make_per_head

from ioi_anti.analysis import categories
from ioi_anti.params import Categorisation
from ioi_anti.pipelines.categorisation import create_pipeline
from ioi_anti.pipelines.categorisation.nodes import categorise_heads, correlate_deltas, count_heads_by_layer

PARAMS = Categorisation(pair=["ioi", "anti"], tau=0.05, sensitivity_taus=[0.03, 0.05], n_boot=200, ci_level=0.95,
                        n_depth_bins=4)
TASKS = ["ioi", "anti"]
TINY = SyntheticModel("tiny", "gpt2", 1_000_000, 2, 3)


def tiny_heads(ioi: list[float], anti: list[float], half_width: float = 0.001) -> pd.DataFrame:
    """A 2 x 3 model whose six heads have the given Δ and symmetric intervals of ``half_width``."""
    table = make_per_head((TINY,))
    table["delta_ioi"], table["delta_anti"] = ioi, anti
    for task in ("ioi", "anti"):
        table[f"delta_{task}_low"] = table[f"delta_{task}"] - half_width
        table[f"delta_{task}_high"] = table[f"delta_{task}"] + half_width
    return table


@pytest.mark.parametrize("tau", [0, 1, -0.1, 1.5, 0.0, 1.0])
def test_invalid_tau_raises_naming_the_value(tau: float) -> None:
    with pytest.raises(ValueError, match=re.escape(f"got {tau!r}")):
        categories.validate_tau(tau)


def test_invalid_tau_rejected_by_categorise_and_sensitivity_list() -> None:
    heads = tiny_heads([0.0] * 6, [0.0] * 6)
    with pytest.raises(ValueError, match="1.5"):
        categories.categorise(heads, 1.5)
    with pytest.raises(ValueError, match="-0.1"):
        categories.categorise_all_taus(heads, 0.05, [0.03, -0.1])


def test_exactly_at_tau_is_strong_and_just_below_is_not() -> None:
    # 0.15 - 0.1 is 0.04999999999999999 in floating point: still "exactly τ".
    heads = tiny_heads([0.05, -0.05, 0.15 - 0.1, 0.0499, -0.0499, 0.0], [0.05, 0.0, 0.0, 0.0, 0.0, -0.05])
    out = categories.categorise(heads, 0.05)
    assert out["strong_ioi"].tolist() == [True, True, True, False, False, False]
    assert out["strong_anti"].tolist() == [True, False, False, False, False, True]
    assert out["category"].tolist() == ["shared", "IOI-only", "IOI-only", "weak", "weak", "anti-only"]


def test_negative_and_positive_delta_signs_and_categories() -> None:
    heads = tiny_heads([-0.2, 0.2, 0.0, 0.01, -0.3, 0.0], [0.0, 0.0, -0.2, 0.01, 0.3, 0.0])
    out = categories.categorise(heads, 0.05)
    assert out["category"].tolist() == ["IOI-only", "IOI-only", "anti-only", "weak", "shared", "weak"]
    assert out["sign_ioi"].tolist() == ["supports", "opposes", "none", "opposes", "supports", "none"]
    assert out["sign_anti"].tolist() == ["none", "none", "supports", "opposes", "opposes", "none"]


def test_robust_requires_whole_interval_beyond_tau() -> None:
    heads = tiny_heads([0.06, 0.08, -0.08, 0.06, 0.2, 0.0], [0.0] * 6)
    heads["delta_ioi_low"] = [0.03, 0.05, -0.12, np.nan, -0.01, -0.1]
    heads["delta_ioi_high"] = [0.08, 0.10, -0.05, np.nan, 0.4, 0.1]
    out = categories.categorise(heads, 0.05)
    # straddles τ; low exactly τ; high exactly -τ; no interval; straddles zero; wide around zero
    assert out["robust_ioi"].tolist() == [False, True, True, False, False, False]
    assert out["strong_ioi"].tolist() == [True, True, True, True, True, False]
    assert out["borderline"].tolist() == [True, False, False, True, True, False]
    assert out["category_robust"].tolist() == ["weak", "IOI-only", "IOI-only", "weak", "weak", "weak"]


def test_robust_category_combines_both_tasks() -> None:
    heads = tiny_heads([0.2, 0.2, 0.0, 0.0, 0.0, 0.0], [0.2, -0.2, 0.0, 0.0, 0.0, 0.0], half_width=0.01)
    heads.loc[1, "delta_anti_low"] = -0.3
    heads.loc[1, "delta_anti_high"] = -0.01
    out = categories.categorise(heads, 0.05)
    assert out["category"].tolist()[:2] == ["shared", "shared"]
    assert out["category_robust"].tolist()[:2] == ["shared", "IOI-only"]


def test_long_table_has_a_block_per_tau_with_the_default_marked() -> None:
    heads = make_per_head(FOUR_MODELS)
    params = PARAMS.model_copy(update={"tau": 0.04, "sensitivity_taus": [0.05, 0.03, 0.05]})
    table = categorise_heads(heads, TASKS, params)
    assert sorted(table["tau"].unique()) == [0.03, 0.04, 0.05]
    assert len(table) == 3 * len(heads)
    assert table.loc[table["is_default_tau"], "tau"].unique().tolist() == [0.04]
    for column in ("category", "category_robust", "strong_ioi", "strong_anti", "robust_ioi", "robust_anti"):
        assert column in table
    loose = table[table["tau"] == 0.03].set_index(["model", "layer", "head"])
    strict = table[table["tau"] == 0.05].set_index(["model", "layer", "head"])
    assert (loose["strong_ioi"] | ~strict["strong_ioi"]).all(), "a head strong at 0.05 must be strong at 0.03"


def test_strong_head_counts_cover_every_category_and_sum_to_all_heads() -> None:
    heads = make_per_head(FOUR_MODELS)
    table = categorise_heads(heads, TASKS, PARAMS)
    counts = categories.strong_head_counts(table)
    assert len(counts) == 4 * 2 * len(categories.PAPER_PAIR.categories)
    totals = counts.groupby(["model", "tau"])["count"].sum()
    sizes = heads.groupby("model").size()
    for (model, _tau), total in totals.items():
        assert total == sizes[model]
    expected = table[(table["model"] == "gpt2") & (table["tau"] == 0.05)]["category"].value_counts()
    got = counts[(counts["model"] == "gpt2") & (counts["tau"] == 0.05)].set_index("category")["count"]
    assert got.reindex(expected.index).tolist() == expected.tolist()
    assert (counts["n_robust"] <= counts["count"]).all()


def test_zero_count_categories_are_kept() -> None:
    table = categories.categorise_all_taus(tiny_heads([0.0] * 6, [0.0] * 6), 0.05, [])
    counts = categories.strong_head_counts(table).set_index("category")["count"]
    assert counts.to_dict() == {"IOI-only": 0, "anti-only": 0, "shared": 0, "weak": 6}


def test_layer_counts_per_layer_and_depth_fraction() -> None:
    heads = make_per_head(FOUR_MODELS + SINGLE_MODEL)
    table = categorise_heads(heads, TASKS, PARAMS)
    layers = count_heads_by_layer(table, TASKS, PARAMS)
    per_layer = layers.groupby(["model", "tau", "layer"])["count"].sum()
    assert (per_layer == layers.groupby(["model", "tau", "layer"])["n_heads"].first()).all()
    smol = layers[layers["model"] == "smollm2-135m"]
    assert smol["depth_frac"].min() == 0.0 and smol["depth_frac"].max() == 1.0
    assert set(smol["depth_bin"]) == {0, 1, 2, 3}
    assert smol.loc[smol["layer"] == 29, "depth_bin"].unique().tolist() == [3]
    assert smol.loc[smol["layer"] == 7, "depth_bin"].unique().tolist() == [0]  # 7/29 < 0.25


def test_depth_fraction_of_a_one_layer_model_is_zero() -> None:
    fraction = categories.depth_fraction(pd.Series([0, 0, 3]), pd.Series([1, 1, 4]))
    assert fraction.tolist() == [0.0, 0.0, 1.0]


def test_correlations_match_scipy_over_all_heads() -> None:
    heads = make_per_head(FOUR_MODELS, seed=3)
    heads["delta_anti"] = heads["delta_anti"].round(2)  # ties, which Spearman must rank-average
    corr = correlate_deltas(heads, TASKS, PARAMS, seed=0).set_index("model")
    for model, rows in heads.groupby("model"):
        assert corr.at[model, "n_heads"] == len(rows)
        assert corr.at[model, "pearson"] == pytest.approx(pearsonr(rows["delta_ioi"], rows["delta_anti"])[0])
        assert corr.at[model, "spearman"] == pytest.approx(spearmanr(rows["delta_ioi"], rows["delta_anti"])[0])
        for stat in ("pearson", "spearman"):
            assert corr.at[model, f"{stat}_low"] < corr.at[model, stat] < corr.at[model, f"{stat}_high"]


def test_correlation_of_known_data() -> None:
    heads = tiny_heads([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.2, 0.4, 0.6, 0.8, 1.0, 1.3])
    corr = categories.correlations(heads, n_boot=50, seed=0).iloc[0]
    assert corr["spearman"] == pytest.approx(1.0)
    assert corr["pearson"] == pytest.approx(pearsonr(heads["delta_ioi"], heads["delta_anti"])[0])
    assert corr["pearson"] < 1.0


def test_correlation_bootstrap_is_seeded_and_per_model() -> None:
    heads = make_per_head(FOUR_MODELS)
    first = categories.correlations(heads, n_boot=100, seed=1).set_index("model")
    again = categories.correlations(heads, n_boot=100, seed=1).set_index("model")
    other = categories.correlations(heads, n_boot=100, seed=2).set_index("model")
    alone = categories.correlations(heads[heads["model"] == "gpt2"], n_boot=100, seed=1).set_index("model")
    pd.testing.assert_frame_equal(first, again)
    assert (first["pearson_low"] != other["pearson_low"]).any()
    assert alone.at["gpt2", "pearson_low"] == first.at["gpt2", "pearson_low"]


def test_correlation_rejects_bad_settings() -> None:
    heads = make_per_head(SINGLE_MODEL)
    with pytest.raises(ValueError, match="n_boot"):
        categories.correlations(heads, n_boot=0, seed=0)
    with pytest.raises(ValueError, match="level"):
        categories.correlations(heads, n_boot=10, seed=0, level=1.0)


def _broken(kind: str) -> pd.DataFrame:
    heads = make_per_head(FOUR_MODELS)
    target = heads.index[(heads["model"] == "opt-125m") & (heads["layer"] == 2) & (heads["head"] == 5)][0]
    if kind == "missing head":
        return heads.drop(index=target)
    if kind == "layer out of range":
        heads.loc[target, "layer"] = 12
        return heads
    if kind == "duplicate":
        return pd.concat([heads, heads.loc[[target]]], ignore_index=True)
    if kind == "nan delta":
        heads.loc[target, "delta_anti"] = np.nan
        return heads
    heads.loc[target, "n_layers"] = 13
    return heads


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing head", r"1 head\(s\) missing"),
        ("layer out of range", r"outside the 12 x 12 grid"),
        ("duplicate", r"duplicated .*\(2, 5\)"),
        ("nan delta", r"non-finite value\(s\) in delta_anti"),
        ("varying n_layers", r"n_layers is not constant"),
    ],
)
def test_grid_validation_names_model_and_problem(kind: str, message: str) -> None:
    heads = _broken(kind)
    with pytest.raises(ValueError, match=rf"'opt-125m'.*{message}"):
        categories.validate_grid(heads)
    with pytest.raises(ValueError, match="opt-125m"):
        categorise_heads(heads, TASKS, PARAMS)
    with pytest.raises(ValueError, match="opt-125m"):
        correlate_deltas(heads, TASKS, PARAMS, seed=0)


def test_grid_validation_accepts_complete_grids_and_rejects_missing_columns() -> None:
    heads = make_per_head(FOUR_MODELS + SINGLE_MODEL)
    categories.validate_grid(heads)
    with pytest.raises(ValueError, match="delta_anti_high"):
        categories.categorise(heads.drop(columns="delta_anti_high"), 0.05)
    with pytest.raises(ValueError, match="delta_induction"):
        categories.correlations(heads, 10, 0, pair=categories.run_pair(["ioi", "induction"], ["ioi", "induction"]))
    with pytest.raises(ValueError, match="empty"):
        categories.validate_grid(heads.iloc[:0])


def test_categorisation_pipeline_assembles() -> None:
    pipeline = create_pipeline()
    assert pipeline.inputs() == {"per_head", "params:tasks", "params:categorisation", "params:categorisation.pair",
                                 "params:seed"}
    assert pipeline.all_outputs() == {"head_categories", "strong_head_counts", "layer_counts", "correlations",
                                      "signature_counts", "task_correlations"}


def with_task(table: pd.DataFrame, task: str, delta: list[float], half_width: float = 0.001) -> pd.DataFrame:
    """``table`` with a third task's Δ and intervals."""
    return table.assign(**{f"delta_{task}": delta, f"delta_{task}_low": np.array(delta) - half_width,
                           f"delta_{task}_high": np.array(delta) + half_width})


def test_role_signature_names_every_task_a_head_is_strong_on() -> None:
    heads = with_task(tiny_heads([-0.2, 0.0, -0.2, 0.0, 0.0, 0.06], [-0.2, 0.0, 0.0, 0.07, 0.0, 0.0]),
                      "induction", [-0.3, -0.3, 0.0, 0.0, 0.0, 0.055], half_width=0.01)
    out = categories.categorise(heads, 0.05)
    assert categories.table_tasks(heads) == ["ioi", "anti", "induction"]
    assert out["signature"].tolist() == ["ioi+anti+induction", "induction", "ioi", "anti", "none", "ioi+induction"]
    assert out["category"].tolist() == ["shared", "weak", "IOI-only", "anti-only", "weak", "IOI-only"]
    assert out["signature_robust"].iloc[5] == "ioi", "induction's interval there reaches below τ"


def test_signature_counts_add_up_to_every_head_per_model_and_tau() -> None:
    table = make_per_head(FOUR_MODELS, seed=3)
    rng = np.random.default_rng(0)
    table = with_task(table, "factual", list(rng.laplace(0, 0.03, len(table))))
    counts = categories.signature_counts(categories.categorise_all_taus(table, 0.05, [0.03]))
    per_model = counts.groupby(["model", "tau"])["count"].sum()
    sizes = table.groupby("model").size()
    assert all(per_model[(model, tau)] == sizes[model] for model, tau in per_model.index)
    assert (counts["n_robust"] <= counts["count"]).all()
    assert set(counts.loc[counts["signature"] == "none", "n_tasks"]) == {0}
    assert counts.loc[counts["signature"] == "ioi+anti+factual", "n_tasks"].eq(3).all()


def test_task_correlations_cover_every_pair_and_match_the_pairs_own_table() -> None:
    table = make_per_head(FOUR_MODELS, seed=3)
    rng = np.random.default_rng(1)
    table = with_task(table, "induction", list(0.5 * table["delta_ioi"] + rng.normal(0, 0.01, len(table))))
    corr = categories.task_correlations(table, 200, seed=0)
    assert set(zip(corr["task_x"], corr["task_y"], strict=True)) == {
        ("ioi", "anti"), ("ioi", "induction"), ("anti", "induction")}
    pair = corr[(corr["task_x"] == "ioi") & (corr["task_y"] == "anti")].set_index("model")
    own = categories.correlations(table, 200, seed=0).set_index("model")
    for column in ("pearson", "pearson_low", "pearson_high", "spearman"):
        np.testing.assert_allclose(pair[column], own.loc[pair.index, column])
    for model, heads in table.groupby("model"):
        row = corr[(corr["model"] == model) & (corr["task_y"] == "induction") & (corr["task_x"] == "ioi")].iloc[0]
        assert row["pearson"] == pytest.approx(pearsonr(heads["delta_ioi"], heads["delta_induction"]).statistic)
        assert row["pearson_low"] <= row["pearson"] <= row["pearson_high"]
