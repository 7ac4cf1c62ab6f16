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

STYLE = "params:reporting"


def create_pipeline(**kwargs: object) -> Pipeline:
    """Select hero heads and test, causally, how they serve IOI and anti-repetition."""
    return Pipeline([
        Node(select_hero_heads, ["per_head", "params:categorisation.tau", "params:hero_heads"],
             "hero_heads_for_paper", name="select_hero_heads"),
        Node(study_hero_heads, ["hero_heads_for_paper", "per_head", "tokenised_prompts", "params:models",
                                "params:model_registry", "params:runtime", "params:head_ablation",
                                "params:categorisation.tau", "params:hero_heads", "params:seed"],
             ["hero_dose_response", "hero_topk", "hero_paths", "hero_attention", "hero_decomposition"],
             name="study_hero_heads"),
        Node(summarise_hero_routes, ["hero_decomposition", "hero_heads_for_paper", "params:categorisation.tau",
                                     "params:hero_heads"], "hero_routes", name="summarise_hero_routes"),
        Node(plot_decomposition, ["hero_decomposition", "hero_routes", "hero_heads_for_paper", STYLE],
             "hero_decomposition_plots", name="plot_hero_decomposition"),
        Node(plot_dose_response, ["hero_dose_response", "hero_heads_for_paper", STYLE], "hero_dose_response_plot",
             name="plot_hero_dose_response"),
        Node(plot_topk, ["hero_topk", STYLE], "hero_topk_plot", name="plot_hero_topk"),
        Node(plot_paths, ["hero_paths", "hero_heads_for_paper", STYLE], "hero_paths_plot", name="plot_hero_paths"),
        Node(plot_attention, ["hero_attention", "hero_heads_for_paper", STYLE], "hero_attention_plot",
             name="plot_hero_attention"),
    ])
