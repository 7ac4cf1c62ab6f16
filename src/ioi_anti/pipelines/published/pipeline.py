"""Published pipeline: the study's published tables (data/01_raw/published) -> published_audit, and with
the run's head categories -> published_comparison, published_hero_comparison.

The audit needs only the shipped CSVs and the models' public architectures, so it runs in the default
run on any machine; the comparison has a row for every model of the run, with published numbers beside
it for the models the study published."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ioi_anti.pipelines.published.nodes import audit_published_tables, compare_with_published


def create_pipeline(**kwargs) -> Pipeline:
    """Build the published pipeline."""
    return Pipeline([
        Node(audit_published_tables, ["published_per_head", "published_correlations", "published_category_counts",
                                      "params:published"], "published_audit", name="audit_published_tables"),
        Node(compare_with_published,
             ["head_categories", "correlations", "published_per_head", "published_correlations",
              "published_category_counts", "published_heroes", "params:tasks", "params:categorisation.pair",
              "params:published"],
             ["published_comparison", "published_hero_comparison"], name="compare_with_published"),
    ])
