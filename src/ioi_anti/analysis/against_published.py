"""The run's own results beside the published ones (data/01_raw/published).

Per model of the run: its r(Δ_x, Δ_y) over every head with its bootstrap interval, and the r the
published shortcut gives on its own table (the top-k heads of each task joined with 0.0 for a head
missing from one list), which shows what the shortcut alone does. For a model the study published,
beside those: the published r; the category counts at the run's τ over every head beside the published
counts (over the listed rows only); and Pearson r between the run's and the published Δ over the heads
the published table lists, per task. Per published hero head: its published Δ and category beside its Δ
and category in the run.

The comparison is of like with like only under the published protocol (``--env paper_protocol``: the
published prompt forms, zero ablation, raw Δ); :func:`published_protocol` tells whether a run used it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ioi_anti.analysis.categories import Pair
from ioi_anti.analysis.published import join_top_k, pearson

COUNTS = ("x_only", "y_only", "shared", "weak")
PUBLISHED_COUNTS = ("n_ioi_only", "n_anti_only", "n_shared", "n_weak")
"""The published summary's count columns, in the order of a pair's categories (x-only, y-only, shared,
weak): the published tables' pair is (IOI, anti-repeat)."""

MODEL_COLUMNS = ["model", "published_model", "n_heads", "r", "r_low", "r_high", "r_published", "top_k",
                 "r_top_k_zero_fill",
                 "n_listed_x", "n_listed_y", "listed_pearson_x", "listed_pearson_y",
                 *(f"{kind}_{count}" for count in COUNTS for kind in ("n", "n_published"))]
HERO_COLUMNS = ["model", "published_model", "layer", "head", "published_category", "published_delta_x",
                "published_delta_y", "delta_x", "delta_y", "category"]


def published_model(model_id: str, names: Mapping[str, str]) -> str | None:
    """The published name of a run's model (``names``: ``published.names``, registry id -> published name);
    a checkpoint ``id@step`` is not the published model."""
    return None if "@" in model_id else names.get(model_id)


def _listed_pearson(own: pd.DataFrame, listed: pd.DataFrame, column: str, published_column: str) -> tuple[int, float]:
    """How many heads the published table lists with a nonzero ``published_column`` (zero fill is not a
    measurement), and Pearson r of the run's and the published Δ over them."""
    measured = listed.loc[listed[published_column] != 0.0, ["layer", "head", published_column]]
    rows = measured.rename(columns={published_column: "published"}).merge(own[["layer", "head", column]],
                                                                          on=["layer", "head"])
    return len(rows), pearson(rows[column].to_numpy(float), rows["published"].to_numpy(float))


def compare_models(heads: pd.DataFrame, correlations: pd.DataFrame, published_per_head: pd.DataFrame,
                   published_correlations: pd.DataFrame, published_categories: pd.DataFrame, pair: Pair,
                   names: Mapping[str, str], top_k: int) -> pd.DataFrame:
    """One row per model of the run (``heads``: its categorised heads at one τ, as the categorisation
    pipeline made them; columns :data:`MODEL_COLUMNS`): its r and the r the published shortcut
    gives on its own table, and, for a model the study published, the published numbers beside them (NaN
    for the others). The shortcut keeps as many heads per task as the published table lists for the
    model, else ``top_k`` (the published scans' top-k)."""
    x, y = (f"delta_{name}" for name in pair.names)
    published_r = published_correlations.set_index("model")["corr"]
    summary = published_categories.set_index("model")
    rows = []
    for model, own in heads.groupby("model", sort=True):
        name = published_model(str(model), names)
        name = name if name in set(published_per_head["model"]) else None
        listed = published_per_head[published_per_head["model"] == name]
        corr = correlations.set_index("model").loc[model]
        n_x, r_x = _listed_pearson(own, listed, x, "delta_ioi")
        n_y, r_y = _listed_pearson(own, listed, y, "delta_anti")
        k = max(n_x, n_y) if name is not None else top_k
        shortcut = join_top_k(own, k, x, y)
        categories = own["category"].value_counts()
        row = {"model": model, "published_model": name, "n_heads": len(own), "r": corr["pearson"],
               "r_low": corr["pearson_low"], "r_high": corr["pearson_high"],
               "r_published": published_r.get(name, np.nan), "top_k": k,
               "r_top_k_zero_fill": pearson(shortcut[x].to_numpy(float), shortcut[y].to_numpy(float)),
               "n_listed_x": n_x, "n_listed_y": n_y, "listed_pearson_x": r_x, "listed_pearson_y": r_y}
        for count, category, column in zip(COUNTS, pair.categories, PUBLISHED_COUNTS, strict=True):
            row[f"n_{count}"] = int(categories.get(category, 0))
            row[f"n_published_{count}"] = float(summary.at[name, column]) if name in summary.index else np.nan
        if name is None:
            row |= {"n_listed_x": np.nan, "n_listed_y": np.nan}
        rows.append(row)
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def compare_heroes(heads: pd.DataFrame, published_heroes: pd.DataFrame, pair: Pair,
                   names: Mapping[str, str]) -> pd.DataFrame:
    """Each published hero head of a run's model: its published Δ and category beside its Δ and category at
    the run's τ (``heads``: categorised at it; NaN and "not in the model" for a head outside the grid)."""
    x, y = (f"delta_{name}" for name in pair.names)
    rows = []
    for model, own in heads.groupby("model", sort=True):
        name = published_model(str(model), names)
        heroes = published_heroes[published_heroes["model"] == name] if name is not None else published_heroes.iloc[:0]
        if heroes.empty:
            continue
        mine = own.set_index(["layer", "head"])
        for hero in heroes.itertuples(index=False):
            found = (hero.layer, hero.head) in mine.index
            row = mine.loc[(hero.layer, hero.head)] if found else None
            rows.append({"model": model, "published_model": name, "layer": hero.layer, "head": hero.head,
                         "published_category": hero.category, "published_delta_x": hero.delta_ioi,
                         "published_delta_y": hero.delta_anti,
                         "delta_x": row[x] if found else np.nan, "delta_y": row[y] if found else np.nan,
                         "category": row["category"] if found else "not in the model"})
    return pd.DataFrame(rows, columns=HERO_COLUMNS)
