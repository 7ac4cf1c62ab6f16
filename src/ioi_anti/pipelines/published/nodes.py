"""Node functions of the published pipeline: thin wrappers over :mod:`ioi_anti.analysis.published` (the audit) and
:mod:`ioi_anti.analysis.against_published` (the run beside the published results)."""

from __future__ import annotations

import pandas as pd

from ioi_anti.analysis.against_published import compare_heroes, compare_models
from ioi_anti.analysis.categories import default_tau_rows, run_pair
from ioi_anti.analysis.published import audit_published
from ioi_anti.params import Published


def audit_published_tables(per_head: pd.DataFrame, correlations: pd.DataFrame, categories: pd.DataFrame,
                           params: Published) -> pd.DataFrame:
    """One row per finding of the audit of the published tables, at the published τ."""
    return audit_published(per_head, correlations, categories, tau=params.tau)


def compare_with_published(head_categories: pd.DataFrame, correlations: pd.DataFrame, published_per_head: pd.DataFrame,
                           published_correlations: pd.DataFrame, published_categories: pd.DataFrame,
                           published_heroes: pd.DataFrame, tasks: list[str], pair: list[str],
                           params: Published) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every model's r over all heads and under the published top-k shortcut, with the published numbers
    beside them for the models the study published; and the published hero heads in the run."""
    run, names = run_pair(tasks, pair), params.names
    heads = default_tau_rows(head_categories)[0]  # the categories the run already made, at its τ
    models = compare_models(heads, correlations, published_per_head, published_correlations,
                            published_categories, run, names, params.top_k)
    return models, compare_heroes(heads, published_heroes, run, names)
