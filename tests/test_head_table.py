"""The per-head table from per-prompt effects: Delta, intervals, grid validation, agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ioi_anti.pipelines.head_ablation.nodes import attribution_agreement, model_head_table

N_LAYERS, N_HEADS, N_PROMPTS = 2, 3, 6
PARAMS = {"n_boot": 500, "ci": 0.95, "ablation": "mean"}


def _inputs(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    baseline = pd.DataFrame([
        {"task": task, "pair_id": i, "m_clean": 3.0 + rng.normal(), "m_ref": rng.normal(), "model_id": "tiny",
         "family": "gpt2", "n_params": 1000, "n_layers": N_LAYERS, "n_heads": N_HEADS}
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
    table = model_head_table(long, baseline, PARAMS, seed=0)
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


def test_a_model_whose_gap_is_not_positive_is_flagged() -> None:
    long, baseline = _inputs()
    baseline.loc[baseline["task"] == "anti", "m_ref"] = baseline["m_clean"] + 1.0
    assert not model_head_table(long, baseline, PARAMS, seed=0)["gap_ok"].any()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda long: long[~((long["layer"] == 1) & (long["head"] == 2))], "misses 1 heads"),
    (lambda long: pd.concat([long, long.assign(layer=N_LAYERS)]), "outside the 2x3 grid"),
    (lambda long: pd.concat([long, long[long["layer"] == 0]]), "other than 6 prompts"),
])
def test_the_grid_is_validated_against_the_model_config(edit, message: str) -> None:
    long, baseline = _inputs()
    with pytest.raises(ValueError, match=message):
        model_head_table(edit(long), baseline, PARAMS, seed=0)


def test_attribution_agreement_over_all_and_top_heads() -> None:
    long, baseline = _inputs()
    table = model_head_table(long, baseline, PARAMS, seed=0)
    perfect = table.assign(attr_delta_ioi=table["delta_ioi"] * 2, attr_delta_anti=-table["delta_anti"])
    rows = {row["task"]: row for row in attribution_agreement(perfect)}
    assert rows["ioi"]["spearman"] == pytest.approx(1.0) and rows["anti"]["spearman"] == pytest.approx(-1.0)
    assert rows["ioi"]["n_top"] == N_LAYERS * N_HEADS
