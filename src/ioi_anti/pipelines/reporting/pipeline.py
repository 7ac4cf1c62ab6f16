"""Reporting pipeline: categorisation tables + baseline/metadata -> figures, correlation table, report."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ioi_anti.pipelines.reporting.nodes import (
    corr_vs_scale_table,
    plot_all_heads_phase_space,
    plot_corr_vs_scale,
    plot_family_grid,
    plot_interactive_phase_space,
    plot_layer_hists,
    plot_strong_head_scaling,
    plot_task_roles,
    plot_training_dynamics,
    write_report,
)
from ioi_anti.report.registry import FIGURES, HERO_FIGURES, TASK_ROLES_FIGURE

PARAMS, TASKS, PAIR = "params:reporting", "params:tasks", "params:categorisation.pair"
# Tables by argument name, then every figure (kept under its dataset name) for the report to show.
REPORT_INPUTS = {
    name: name for name in ("baseline", "run_metadata", "head_categories", "strong_head_counts", "correlations",
                            "attribution_agreement", "hero_paths", "hero_attention", "hero_routes", "layer_hists",
                            "training_plots", "hero_decomposition_plots", "signature_counts", "task_correlations",
                            "published_audit", "published_comparison", "published_hero_comparison")
} | {"hero_heads": "hero_heads_for_paper", "interactive_phase_space": "all_heads_phase_space_interactive",
     "tasks": TASKS, "pair": PAIR, "params": PARAMS} | {
    fig.dataset: fig.dataset for fig in (*FIGURES, *HERO_FIGURES, TASK_ROLES_FIGURE)}


def create_pipeline(**kwargs) -> Pipeline:
    """Build the reporting pipeline."""
    return Pipeline([
        Node(corr_vs_scale_table, "correlations", "corr_vs_scale_cross_family", name="corr_vs_scale_table"),
        Node(plot_corr_vs_scale, ["correlations", TASKS, PAIR, PARAMS], "corr_vs_scale_cross_family_plot",
             name="plot_corr_vs_scale"),
        Node(plot_strong_head_scaling, ["strong_head_counts", TASKS, PAIR, PARAMS], "strong_head_scaling_plot",
             name="plot_strong_head_scaling"),
        Node(plot_all_heads_phase_space, ["head_categories", TASKS, PAIR, PARAMS], "all_heads_phase_space_plot",
             name="plot_all_heads_phase_space"),
        Node(plot_family_grid, ["head_categories", TASKS, PAIR, PARAMS], "family_grid_plot", name="plot_family_grid"),
        Node(plot_layer_hists, ["layer_counts", TASKS, PAIR, PARAMS], "layer_hists", name="plot_layer_hists"),
        Node(plot_training_dynamics, ["correlations", "strong_head_counts", "head_categories", "hero_heads_for_paper",
                                      TASKS, PAIR, PARAMS], "training_plots", name="plot_training_dynamics"),
        Node(plot_task_roles, ["signature_counts", "task_correlations", TASKS, PARAMS], "task_roles_plot",
             name="plot_task_roles"),
        Node(plot_interactive_phase_space, ["head_categories", TASKS, PAIR], "all_heads_phase_space_interactive",
             name="plot_interactive_phase_space"),
        Node(write_report, REPORT_INPUTS, ["report", "report_html"], name="write_report"),
    ])
