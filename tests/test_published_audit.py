"""The audit of the published tables: each check on a small hand-made table with a known answer, the task
classifier on the published and design.md prompt forms, the top-k shortcut replayed, and the audit of the
shipped CSVs checked against independent pandas code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ioi_anti.analysis.published import (
    ARCHITECTURES,
    COLUMNS,
    COPY,
    LIST,
    NAME_CHOICE,
    PUBLISHED_ANTI_TEMPLATE,
    PUBLISHED_IOI_TEMPLATE,
    audit_published,
    classify_task,
    fitting_architectures,
    join_top_k,
    zero_fill_correlation,
    zero_fill_share,
)
from ioi_anti.report.published import CHECK_KINDS, audit_words

PUBLISHED = Path(__file__).resolve().parents[1] / "data" / "01_raw" / "published"
TOY = {"toy": (2, 2), "twin": (2, 2)}


def heads(model: str, rows: list[tuple[int, int, float, float]]) -> pd.DataFrame:
    """A per-head table in the published layout from (layer, head, delta_ioi, delta_anti) tuples."""
    table = pd.DataFrame(rows, columns=["layer", "head", "delta_ioi", "delta_anti"])
    return table.assign(family="toy", model=model)[["family", "model", "layer", "head", "delta_ioi", "delta_anti"]]


def no_correlations() -> pd.DataFrame:
    return pd.DataFrame({"family": [], "model": [], "params_m": [], "corr": []})


def no_categories() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ["family", "model", "n_anti_only", "n_ioi_only", "n_shared", "n_weak"]})


def audit(per_head: pd.DataFrame, correlations: pd.DataFrame | None = None, categories: pd.DataFrame | None = None,
          tau: float = 0.05) -> pd.DataFrame:
    return audit_published(per_head, no_correlations() if correlations is None else correlations,
                           no_categories() if categories is None else categories, TOY, tau)


def row(result: pd.DataFrame, model: str, check: str) -> pd.Series:
    found = result[(result["model"] == model) & (result["check"] == check)]
    assert len(found) == 1, f"expected one {check} row for {model}, got {len(found)}"
    return found.iloc[0]


def test_impossible_heads_are_rows_outside_the_architecture() -> None:
    table = heads("toy", [(0, 0, -0.1, -0.2), (0, 1, -0.3, 0.1), (1, 0, 0.2, -0.4), (5, 0, -0.5, 0.3),
                          (1, -1, 0.1, 0.1), (0, 2, 0.3, 0.3)])
    result = audit(table)
    impossible = row(result, "toy", "impossible_heads")
    assert impossible["count"] == 3
    assert all(head in impossible["examples"] for head in ("L5H0", "L1H-1", "L0H2"))
    assert "L0H0" not in impossible["examples"]
    listed = row(result, "toy", "heads_listed")
    assert listed["count"] == 3
    assert listed["value"] == pytest.approx(0.75)


def test_an_unknown_model_gets_its_own_row_and_no_architecture_checks() -> None:
    table = heads("mystery", [(0, 0, -0.1, -0.2), (9, 9, -0.3, 0.1)])
    result = audit(table)
    unknown = row(result, "mystery", "architecture_unknown")
    assert unknown["count"] == 2
    assert "No architecture is known for mystery" in unknown["finding"]
    mystery = result[result["model"] == "mystery"]
    assert not mystery["check"].isin(["impossible_heads", "heads_listed"]).any()


def test_duplicate_rows_count_extra_rows_and_disagreeing_heads() -> None:
    table = heads("toy", [(0, 0, -0.1, -0.2), (0, 0, -0.3, -0.2), (0, 1, 0.1, 0.2), (0, 1, 0.1, 0.2),
                          (1, 1, 0.4, 0.4)])
    duplicates = row(audit(table), "toy", "duplicate_rows")
    assert duplicates["count"] == 2
    assert duplicates["value"] == 1  # L0H0's copies disagree, L0H1's agree
    assert "L0H0" in duplicates["examples"] and "L1H1" not in duplicates["examples"]
    assert row(audit(table), "toy", "heads_listed")["count"] == 3


def test_zero_filled_rows_are_counted_per_column() -> None:
    table = heads("toy", [(0, 0, 0.0, -0.2), (0, 1, 0.0, -0.3), (1, 0, -0.5, 0.0), (1, 1, -0.4, -0.1)])
    result = audit(table)
    ioi, anti = row(result, "toy", "zero_filled:delta_ioi"), row(result, "toy", "zero_filled:delta_anti")
    assert (ioi["count"], anti["count"]) == (2, 1)
    assert ioi["value"] == pytest.approx(0.5)
    assert "L1H0" in anti["examples"] and "L1H0" not in ioi["examples"]


def test_values_and_whole_columns_shared_between_models_are_found() -> None:
    toy = heads("toy", [(0, 0, -0.11, -0.123), (0, 1, -0.12, -0.456), (1, 0, -0.13, 0.0)])
    twin = heads("twin", [(0, 0, -0.21, -0.123), (0, 1, 0.0, -0.456), (1, 1, -0.23, -0.7)])
    other = heads("other", [(0, 0, -0.12, -0.9), (0, 1, -0.11, -0.8), (1, 0, -0.13, -0.7)])  # toy's IOI, moved
    copy = heads("copy", [(0, 0, -0.11, -0.95), (0, 1, -0.12, -0.85), (1, 0, -0.13, -0.75)])  # toy's IOI, in place
    result = audit(pd.concat([toy, twin, other, copy]))
    assert row(result, "all", "repeated_values:delta_anti")["count"] == 3  # -0.123, -0.456 and -0.7
    assert row(result, "toy", "repeated_values:delta_anti")["count"] == 2
    assert row(result, "twin", "repeated_values:delta_anti")["count"] == 3
    # toy, other and copy have the same delta_ioi column (copy at the same heads), twin's is its own
    assert row(result, "all", "repeated_column:delta_ioi")["count"] == 3
    assert row(result, "toy", "repeated_column:delta_ioi")["examples"] == "other, copy"
    assert "2 other models, 1 of them at the same (layer, head)" in row(result, "toy", "repeated_column:delta_ioi")[
        "finding"]
    assert "0 of them at the same" in row(result, "other", "repeated_column:delta_ioi")["finding"]
    assert row(result, "twin", "repeated_column:delta_ioi")["count"] == 0
    assert row(result, "all", "repeated_column:delta_anti")["count"] == 0


def test_fitting_architectures_are_those_holding_every_head() -> None:
    listed = pd.DataFrame({"layer": [0, 12, 3], "head": [7, 5, 0]})
    assert fitting_architectures(listed, ARCHITECTURES) == ["gpt2-medium", "gpt2-large", "pythia-410m", "pythia-1b"]


def test_the_correlation_is_recomputed_and_compared_with_the_published_one() -> None:
    toy = heads("toy", [(0, 0, -0.1, -0.2), (0, 1, -0.3, -0.1), (1, 0, -0.5, -0.6), (1, 1, 0.2, 0.3)])
    twin = heads("twin", [(0, 0, -0.1, -0.4), (0, 1, -0.3, -0.1), (1, 0, -0.5, -0.6), (1, 1, 0.2, 0.3)])
    r_toy, r_twin = (np.corrcoef(t["delta_ioi"], t["delta_anti"])[0, 1] for t in (toy, twin))
    published = pd.DataFrame({"family": "toy", "model": ["toy", "twin"], "params_m": 1.0, "corr": [0.1, r_twin]})
    result = audit(pd.concat([toy, twin]), correlations=published)
    wrong, right = row(result, "toy", "correlation_recomputed"), row(result, "twin", "correlation_recomputed")
    assert wrong["count"] == 4
    assert wrong["value"] == pytest.approx(r_toy)
    assert wrong["published"] == pytest.approx(0.1)
    assert "the published value is 0.100" in wrong["finding"]
    assert right["value"] == pytest.approx(r_twin)
    assert "is this value" in right["finding"]


def test_correlation_without_zero_fill_needs_three_rows_with_both_deltas() -> None:
    few = heads("toy", [(0, 0, -0.1, -0.2), (0, 1, -0.3, 0.0), (1, 0, 0.0, -0.6), (1, 1, 0.2, 0.3)])
    enough = heads("twin", [(0, 0, -0.1, -0.2), (0, 1, -0.3, -0.1), (1, 0, 0.0, -0.6), (1, 1, 0.2, 0.3)])
    result = audit(pd.concat([few, enough]))
    too_few = row(result, "toy", "correlation_without_zero_fill")
    assert too_few["count"] == 2 and np.isnan(too_few["value"])
    assert "too few" in too_few["finding"]
    measured = row(result, "twin", "correlation_without_zero_fill")
    kept = enough[(enough["delta_ioi"] != 0) & (enough["delta_anti"] != 0)]
    assert measured["count"] == 3
    assert measured["value"] == pytest.approx(np.corrcoef(kept["delta_ioi"], kept["delta_anti"])[0, 1])


def test_zero_fill_share_is_one_when_only_zero_filled_rows_carry_covariance() -> None:
    # x has mean -1 and the two measured rows sit at x = -1, so only the zero-filled rows add to Σ(x−x̄)(y−ȳ)
    table = heads("toy", [(0, 0, 0.0, -3.0), (0, 1, -2.0, 0.0), (1, 0, -1.0, -0.5), (1, 1, -1.0, -2.5)])
    assert zero_fill_share(table) == pytest.approx(1.0)
    share = row(audit(table), "toy", "zero_fill_covariance_share")
    assert share["count"] == 2
    assert share["value"] == pytest.approx(1.0)
    assert "100%" in share["finding"]
    # and 0 when the zero-filled rows sit at both means
    centred = heads("toy", [(0, 0, 0.0, 0.0), (0, 1, 0.0, 0.0), (1, 0, -1.0, -1.0), (1, 1, 1.0, 1.0)])
    assert zero_fill_share(centred) == pytest.approx(0.0, abs=1e-12)


def test_categories_are_recomputed_and_a_wrong_published_count_is_found() -> None:
    # at τ = 0.05: L0H0 shared, L0H1 and L1H1 IOI-only, L1H0 anti-only, no weak head
    table = heads("toy", [(0, 0, -0.1, -0.2), (0, 1, -0.3, 0.01), (1, 0, 0.04, -0.6), (1, 1, -0.2, 0.0)])
    summary = pd.DataFrame({"family": ["toy"], "model": ["toy"], "n_anti_only": [1.0], "n_ioi_only": [2.0],
                            "n_shared": [2.0], "n_weak": [1.0]})
    result = audit(table, categories=summary)
    categories = row(result, "toy", "categories_recomputed")
    assert categories["count"] == 2
    assert (categories["value"], categories["published"]) == (1.0, 2.0)
    assert categories["examples"] == "anti-only 1/1, IOI-only 2/2, shared 1/2, weak 0/1 (recomputed/published)"
    weak = row(result, "toy", "weak_denominator")
    assert weak["count"] == 6 and weak["value"] == 4
    assert "heads 4" in weak["examples"]


def test_a_different_tau_changes_the_recomputed_categories() -> None:
    table = heads("toy", [(0, 0, -0.04, -0.2), (0, 1, -0.3, 0.01)])
    summary = pd.DataFrame({"family": ["toy"], "model": ["toy"], "n_anti_only": [1.0], "n_ioi_only": [1.0],
                            "n_shared": [0.0], "n_weak": [0.0]})
    assert row(audit(table, categories=summary), "toy", "categories_recomputed")["count"] == 0
    assert row(audit(table, categories=summary, tau=0.03), "toy", "categories_recomputed")["count"] == 2


def test_the_published_prompt_forms_are_name_choice_tasks_with_the_ioi_pattern() -> None:
    ioi = classify_task(PUBLISHED_IOI_TEMPLATE, "B", "A")
    anti = classify_task(PUBLISHED_ANTI_TEMPLATE, "B", "A")
    assert ioi.kind == NAME_CHOICE and anti.kind == NAME_CHOICE
    assert anti.repeated_slots == ("A",)
    assert anti.pattern("B") == ioi.pattern("B") == "A B A -> B"


def test_design_list_and_copy_prompts_are_not_name_choice() -> None:
    new_item = classify_task("The farm has a horse, a dog, a duck and a", "cow", "horse")
    assert new_item.kind == LIST
    assert (new_item.answer_in_prompt, new_item.distractor_in_prompt) == (False, True)
    assert new_item.repeated_slots == ()
    assert classify_task("Say it twice: horse, dog, duck. Say it twice: horse, dog,", "duck", "cow").kind == COPY
    assert classify_task("The farm has a {X}, a {Y}, a {Z} and a", "W", "X").kind == LIST


def test_the_audit_judges_each_published_task_against_design() -> None:
    result = audit(heads("toy", [(0, 0, -0.1, -0.2)]))
    anti, ioi = row(result, "all", "task_definition:anti"), row(result, "all", "task_definition:ioi")
    assert anti["count"] == 1 and ioi["count"] == 1
    assert "name-choice task" in anti["finding"] and "defines it as a list (new item) task" in anti["finding"]
    assert "as design.md defines it" in ioi["finding"]


def test_the_top_k_shortcut_is_replayed_on_a_complete_table() -> None:
    complete = heads("toy", [(0, 0, -1.0, 0.5), (0, 1, -0.8, 0.4), (1, 0, 0.1, -1.0), (1, 1, 0.2, -0.9),
                             (2, 0, 0.3, 0.3), (2, 1, 0.4, 0.2)])
    joined = join_top_k(complete, top_k=2).sort_values(["layer", "head"])
    assert list(zip(joined["layer"], joined["head"], strict=True)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert joined["delta_anti"].tolist() == [0.0, 0.0, -1.0, -0.9]
    assert joined["delta_ioi"].tolist() == [-1.0, -0.8, 0.0, 0.0]
    result = zero_fill_correlation(complete, top_k=2).iloc[0]
    assert (result["n_heads"], result["n_union"], result["n_zero_filled"]) == (6, 4, 4)
    assert result["r_all_heads"] == pytest.approx(np.corrcoef(complete["delta_ioi"], complete["delta_anti"])[0, 1])
    assert result["r_top_k_union"] == pytest.approx(np.corrcoef([-1.0, -0.8, 0, 0], [0, 0, -1.0, -0.9])[0, 1])
    assert result["zero_fill_share"] == pytest.approx(1.0)


def test_a_head_in_both_top_k_lists_keeps_both_values() -> None:
    complete = heads("toy", [(0, 0, -1.0, -1.0), (0, 1, -0.8, 0.4), (1, 0, 0.1, -0.9), (1, 1, 0.2, 0.3)])
    joined = join_top_k(complete, top_k=2).set_index(["layer", "head"])
    assert joined.loc[(0, 0)].tolist() == ["toy", -1.0, -1.0]
    assert len(joined) == 3
    assert zero_fill_correlation(complete, top_k=2).iloc[0]["n_zero_filled"] == 2


def test_the_shortcut_refuses_an_incomplete_table() -> None:
    with pytest.raises(ValueError, match="missing values"):
        zero_fill_correlation(heads("toy", [(0, 0, -1.0, np.nan), (0, 1, -0.8, 0.4)]), top_k=1)
    with pytest.raises(ValueError, match="once"):
        zero_fill_correlation(heads("toy", [(0, 0, -1.0, 0.2), (0, 0, -0.8, 0.4)]), top_k=1)


def test_audit_words_describe_each_kind_with_a_table_of_the_rows_that_show_it() -> None:
    table = heads("toy", [(0, 0, -0.1, -0.2), (5, 0, -0.5, 0.0), (0, 1, 0.0, -0.3), (1, 1, -0.2, -0.1)])
    result = audit(table)
    words = audit_words(result)
    assert words.startswith("## The published tables, audited")
    assert "**Impossible heads.**" in words and "Rows naming a head the model does not have: 1 (toy 1)." in words
    assert "| toy | 1 | – | – | L5H0 (delta_ioi=-0.5, delta_anti=0.0) |" in words
    assert "**Duplicate rows.**" in words and "| toy | 0 |" not in words.split("**Duplicate rows.**")[1].split("**")[0]
    assert set(result["check"].str.split(":").str[0]) <= set(CHECK_KINDS)


@pytest.fixture(scope="module")
def shipped() -> dict[str, pd.DataFrame]:
    names = {"per_head": "joint_ioi_anti_repeat_all.csv", "correlations": "corr_vs_scale_cross_family.csv",
             "categories": "head_category_summary.csv"}
    return {key: pd.read_csv(PUBLISHED / name) for key, name in names.items()}


def test_the_audit_of_the_shipped_tables(shipped: dict[str, pd.DataFrame]) -> None:
    per_head = shipped["per_head"]
    result = audit_published(**shipped)
    assert list(result.columns) == COLUMNS
    assert not result.duplicated(["model", "check"]).any()
    assert set(per_head["model"]) == set(ARCHITECTURES)  # the CSVs name exactly the nine published models
    assert set(result["model"]) == set(ARCHITECTURES) | {"all"}
    assert "architecture_unknown" not in set(result["check"])
    assert set(result["check"].str.split(":").str[0]) == set(CHECK_KINDS) - {"architecture_unknown"}

    pythia_70m = per_head[per_head["model"] == "pythia-70m"]
    assert row(result, "pythia-70m", "impossible_heads")["count"] == ((pythia_70m["layer"] >= 6) |
                                                                      (pythia_70m["head"] >= 8)).sum()
    for model, rows in per_head.groupby("model"):
        n_layers, n_heads = ARCHITECTURES[model]
        outside = ((rows["layer"] >= n_layers) | (rows["head"] >= n_heads)).sum()
        assert row(result, model, "impossible_heads")["count"] == outside
        assert row(result, model, "zero_filled:delta_anti")["count"] == (rows["delta_anti"] == 0).sum()
        assert row(result, model, "correlation_recomputed")["value"] == pytest.approx(
            rows["delta_ioi"].corr(rows["delta_anti"]))
        assert row(result, model, "correlation_recomputed")["count"] == len(rows)

    published_r = shipped["correlations"].set_index("model")["corr"]
    recomputed = result[result["check"] == "correlation_recomputed"].set_index("model")
    assert recomputed["published"].sort_index().tolist() == published_r.sort_index().tolist()

    summary = shipped["categories"].set_index("model")
    gpt2 = per_head[per_head["model"] == "gpt2"]
    shared = ((gpt2["delta_ioi"].abs() >= 0.05) & (gpt2["delta_anti"].abs() >= 0.05)).sum()
    categories = row(result, "gpt2", "categories_recomputed")
    assert categories["value"] == shared
    assert categories["published"] == summary.loc["gpt2", "n_shared"]

    nonzero = per_head[per_head["delta_anti"] != 0]
    columns = nonzero.groupby("model")["delta_anti"].apply(lambda s: tuple(sorted(s)))
    copied = (columns.map(columns.value_counts()) >= 2).sum()
    assert row(result, "all", "repeated_column:delta_anti")["count"] == copied

    words = audit_words(result)
    assert words.count("**") == 2 * (len(CHECK_KINDS) - 1)
