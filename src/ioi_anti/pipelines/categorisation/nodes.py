"""Node functions of the categorisation pipeline: thin wrappers over :mod:`ioi_anti.analysis.categories`."""

from __future__ import annotations

import pandas as pd

from ioi_anti.analysis import categories
from ioi_anti.params import Categorisation


def categorise_heads(per_head: pd.DataFrame, tasks: list[str], params: Categorisation) -> pd.DataFrame:
    """Validate the head grid and categorise every head on the run's pair at the default and sensitivity τ."""
    pair = categories.run_pair(tasks, params.pair)
    return categories.categorise_all_taus(per_head, params.tau, params.sensitivity_taus, pair)


def count_strong_heads(head_categories: pd.DataFrame, tasks: list[str], pair: list[str]) -> pd.DataFrame:
    """Heads per model x τ x category."""
    return categories.strong_head_counts(head_categories, categories.run_pair(tasks, pair))


def count_heads_by_layer(head_categories: pd.DataFrame, tasks: list[str], params: Categorisation) -> pd.DataFrame:
    """Heads per model x τ x layer x category, with depth fraction and depth bin."""
    pair = categories.run_pair(tasks, params.pair)
    return categories.layer_counts(head_categories, params.n_depth_bins, pair)


def correlate_deltas(per_head: pd.DataFrame, tasks: list[str], params: Categorisation, seed: int) -> pd.DataFrame:
    """Per-model Pearson and Spearman of the pair's Δ (Δ_IOI vs Δ_anti by default) over all heads, with
    bootstrap intervals (resampled with the bootstrap seed ``seed``)."""
    pair = categories.run_pair(tasks, params.pair)
    return categories.correlations(per_head, params.n_boot, seed, params.ci_level, pair)


def count_signatures(head_categories: pd.DataFrame) -> pd.DataFrame:
    """Heads per model x τ x role signature (the set of the run's tasks a head is strong on)."""
    return categories.signature_counts(head_categories)


def correlate_tasks(per_head: pd.DataFrame, params: Categorisation, seed: int) -> pd.DataFrame:
    """Per model, Pearson and Spearman of Δ between every pair of the run's tasks, with bootstrap intervals."""
    return categories.task_correlations(per_head, params.n_boot, seed, params.ci_level)
