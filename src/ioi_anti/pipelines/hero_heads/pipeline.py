"""hero_heads pipeline: per-head table -> hero selection -> causal case studies -> figures."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from .nodes import (
    plot_attention,
    plot_decomposition,
    plot_dose_response,
    plot_paths,
    plot_topk,
    select_hero_heads,
    study_hero_heads,
    summarise_hero_routes,
)

STYLE, TASKS, PAIR, TAU = "params:reporting", "params:tasks", "params:categorisation.pair", "params:categorisation.tau"


def create_pipeline(**kwargs: object) -> Pipeline:
    """Select hero heads on the run's pair of tasks and test, causally, how they serve both."""
    return Pipeline([
        Node(select_hero_heads, ["per_head", TAU, "params:hero_heads", TASKS, PAIR], "hero_heads_for_paper",
             name="select_hero_heads"),
        Node(study_hero_heads, ["hero_heads_for_paper", "per_head", "tokenised_prompts", "params:models",
                                "params:model_registry", "params:runtime", "params:head_ablation", TAU,
                                "params:hero_heads", "params:seed", TASKS, PAIR],
             ["hero_dose_response", "hero_topk", "hero_paths", "hero_attention", "hero_decomposition"],
             name="study_hero_heads"),
        Node(summarise_hero_routes, ["hero_decomposition", "hero_heads_for_paper", TAU, "params:hero_heads", TASKS,
                                     PAIR], "hero_routes", name="summarise_hero_routes"),
        Node(plot_decomposition, ["hero_decomposition", "hero_routes", "hero_heads_for_paper", TASKS, PAIR, STYLE],
             "hero_decomposition_plots", name="plot_hero_decomposition"),
        Node(plot_dose_response, ["hero_dose_response", "hero_heads_for_paper", TASKS, PAIR, STYLE],
             "hero_dose_response_plot", name="plot_hero_dose_response"),
        Node(plot_topk, ["hero_topk", TASKS, PAIR, STYLE], "hero_topk_plot", name="plot_hero_topk"),
        Node(plot_paths, ["hero_paths", "hero_heads_for_paper", TASKS, PAIR, STYLE], "hero_paths_plot",
             name="plot_hero_paths"),
        Node(plot_attention, ["hero_attention", "hero_heads_for_paper", TASKS, PAIR, STYLE], "hero_attention_plot",
             name="plot_hero_attention"),
    ])
