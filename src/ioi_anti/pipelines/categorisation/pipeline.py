"""Categorisation pipeline: per_head -> head_categories, strong_head_counts, layer_counts, correlations,
role-signature counts and the Δ correlations between every pair of tasks."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ioi_anti.pipelines.categorisation.nodes import (
    categorise_heads,
    correlate_deltas,
    correlate_tasks,
    count_heads_by_layer,
    count_signatures,
    count_strong_heads,
)

TASKS, PARAMS, PAIR = "params:tasks", "params:categorisation", "params:categorisation.pair"


def create_pipeline(**kwargs) -> Pipeline:
    """Build the categorisation pipeline."""
    return Pipeline([
        Node(categorise_heads, ["per_head", TASKS, PARAMS], "head_categories", name="categorise_heads"),
        Node(count_strong_heads, ["head_categories", TASKS, PAIR], "strong_head_counts", name="count_strong_heads"),
        Node(count_heads_by_layer, ["head_categories", TASKS, PARAMS], "layer_counts", name="count_heads_by_layer"),
        Node(correlate_deltas, ["per_head", TASKS, PARAMS, "params:seed"], "correlations", name="correlate_deltas"),
        Node(count_signatures, "head_categories", "signature_counts", name="count_signatures"),
        Node(correlate_tasks, ["per_head", PARAMS, "params:seed"], "task_correlations",
             name="correlate_tasks"),
    ])
