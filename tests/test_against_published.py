"""The run beside the published results: exact agreement with published-format tables made from the run's
own per-head table, and disagreement found and shown when they are perturbed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from base_params import settings
from synthetic import FOUR_MODELS, SINGLE_MODEL, make_per_head, published_format

from ioi_anti.analysis.against_published import compare_heroes, compare_models
from ioi_anti.analysis.categories import categorise, run_pair
from ioi_anti.analysis.published import zero_fill_correlation
from ioi_anti.pipelines.categorisation.nodes import correlate_deltas
from ioi_anti.report.published import side_by_side_words

PAIR = run_pair(["ioi", "anti"], ["ioi", "anti"])
NAMES = {model.model: model.model for model in FOUR_MODELS}
TOP_K = 20
METADATA = {"ablation": "mean", "delta": "normalised"}
CATEGORISATION = settings(categorisation__n_boot=200, categorisation__ci_level=0.95).categorisation


@pytest.fixture(scope="module")
def run() -> tuple[pd.DataFrame, pd.DataFrame]:
    per_head = make_per_head(FOUR_MODELS, scale=0.05)
    return per_head, correlate_deltas(per_head, ["ioi", "anti"], CATEGORISATION, seed=0)


def _compare(run, published: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_head, correlations = run
    heads = categorise(per_head, 0.05, PAIR)
    models = compare_models(heads, correlations, published["per_head"], published["correlations"],
                            published["categories"], PAIR, NAMES, TOP_K)
    return models, compare_heroes(heads, published["heroes"], PAIR, NAMES)


def test_tables_made_from_the_runs_own_heads_agree_exactly(run) -> None:
    per_head, correlations = run
    published = published_format(per_head, TOP_K)
    models, heroes = _compare(run, published)
    assert list(models["model"]) == sorted(NAMES)
    np.testing.assert_allclose(models["listed_pearson_x"], 1.0, atol=1e-12)
    np.testing.assert_allclose(models["listed_pearson_y"], 1.0, atol=1e-12)
    # the published shortcut replayed on the run's table gives the published r (made the same way) ...
    np.testing.assert_allclose(models["r_top_k_zero_fill"], models["r_published"], atol=1e-12)
    # ... and the run's own r is over every head, with its interval
    own = correlations.set_index("model").loc[models["model"], "pearson"].to_numpy()
    np.testing.assert_allclose(models["r"], own)
    assert (models["n_heads"] == [m.n_layers * m.n_heads for m in sorted(FOUR_MODELS, key=lambda m: m.model)]).all()
    assert (models["n_listed_x"] <= TOP_K).all() and (models["n_listed_x"] > 0).all()
    counts = published["categories"].set_index("model").loc[models["model"]]
    np.testing.assert_array_equal(models["n_published_shared"], counts["n_shared"])
    own = categorise(per_head, 0.05, PAIR).groupby("model")["category"].value_counts().unstack(fill_value=0)
    np.testing.assert_array_equal(models["n_shared"], own.loc[models["model"], "shared"])
    np.testing.assert_array_equal(models["n_weak"], own.loc[models["model"], "weak"])
    assert len(heroes) == len(NAMES)
    np.testing.assert_allclose(heroes["delta_x"], heroes["published_delta_x"])
    np.testing.assert_allclose(heroes["delta_y"], heroes["published_delta_y"])


def test_perturbed_published_tables_are_found_and_shown(run) -> None:
    per_head, _ = run
    published = published_format(per_head, TOP_K)
    rng = np.random.default_rng(1)
    table = published["per_head"]
    one = table["model"] == "gpt2"
    table.loc[one, "delta_ioi"] = rng.permutation(table.loc[one, "delta_ioi"].to_numpy())
    published["correlations"].loc[published["correlations"]["model"] == "gpt2", "corr"] = -0.9
    models, _ = _compare(run, published)
    by_model = models.set_index("model")
    assert by_model.at["gpt2", "listed_pearson_x"] < 0.9, "a shuffled published column should disagree"
    assert by_model.at["gpt2", "listed_pearson_y"] == pytest.approx(1.0)
    assert by_model.drop(index="gpt2")["listed_pearson_x"].to_numpy() == pytest.approx(1.0)
    assert by_model.at["gpt2", "r_published"] == -0.9 != pytest.approx(by_model.at["gpt2", "r_top_k_zero_fill"])
    section = side_by_side_words(models, pd.DataFrame(), METADATA, PAIR, 0.05)
    published_rows = section.split("The models the study published")[1].splitlines()
    row = next(line for line in published_rows if line.startswith("| gpt2 |"))
    assert "| -0.900 |" in row and f"| {by_model.at['gpt2', 'listed_pearson_x']:.3f} (" in row


def test_the_section_says_which_protocol_and_is_absent_without_published_models(run) -> None:
    per_head, correlations = run
    published = published_format(per_head, TOP_K)
    models, heroes = _compare(run, published)
    section = side_by_side_words(models, heroes, METADATA, PAIR, 0.05)
    assert section.startswith("## Against the published results")
    assert "did not use the published protocol" in section and "The published hero heads in this run" in section
    paper = run_pair(["paper_ioi", "paper_anti"], ["paper_ioi", "paper_anti"])
    same = side_by_side_words(models, heroes, {"ablation": "zero", "delta": "raw"}, paper, 0.05)
    assert "This run used the published protocol" in same



def test_a_model_the_study_did_not_publish_gets_the_shortcut_on_its_own_table_only(run) -> None:
    per_head, _ = run
    published = published_format(per_head, TOP_K)
    offline = make_per_head(SINGLE_MODEL, scale=0.05)
    correlations = correlate_deltas(offline, ["ioi", "anti"], CATEGORISATION.model_copy(update={"n_boot": 50}),
                                    seed=0)
    models = compare_models(categorise(offline, 0.05, PAIR), correlations, published["per_head"],
                            published["correlations"], published["categories"], PAIR, NAMES, 7)
    (row,) = models.itertuples()
    assert pd.isna(row.published_model) and pd.isna(row.r_published) and pd.isna(row.listed_pearson_x)
    expected = zero_fill_correlation(offline, 7).iloc[0]
    assert row.top_k == 7 and row.r_top_k_zero_fill == pytest.approx(expected["r_top_k_union"])
    assert row.r == pytest.approx(expected["r_all_heads"])
    section = side_by_side_words(models, pd.DataFrame(), METADATA, PAIR, 0.05)
    assert section.startswith("## Against the published results") and "No model of this run is one" in section
    assert f"| smollm2-135m | {row.r:.3f} [" in section and f"| 7 | {row.r_top_k_zero_fill:.3f} |" in section


def test_a_checkpoint_or_an_unlisted_model_is_not_compared(run) -> None:
    per_head, correlations = run
    published = published_format(per_head, TOP_K)
    renamed = per_head.assign(model=per_head["model"].where(per_head["model"] != "gpt2", "gpt2@step1000"))
    renamed_corr = correlations.assign(model=correlations["model"].where(correlations["model"] != "gpt2",
                                                                         "gpt2@step1000"))
    models = compare_models(categorise(renamed, 0.05, PAIR), renamed_corr, published["per_head"],
                            published["correlations"], published["categories"], PAIR,
                            NAMES | {"gpt2@step1000": "gpt2"}, TOP_K)
    assert models.set_index("model")["published_model"].isna().to_dict() == {
        "gpt2@step1000": True, "gpt2-medium": False, "opt-125m": False, "pythia-160m": False}
