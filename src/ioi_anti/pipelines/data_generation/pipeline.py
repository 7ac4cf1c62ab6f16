"""data_generation pipeline: words -> prompts -> tokenised prompts -> baseline per model."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_vocabulary,
    make_anti_prompts,
    make_ioi_prompts,
    measure_baselines,
    summarise_baselines,
    tokenise_for_models,
)

MODELS = ["params:models", "params:model_registry"]


def create_pipeline(**kwargs: object) -> Pipeline:
    """Build the prompt datasets once for the whole run and measure each model's baseline."""
    return Pipeline([
        Node(build_vocabulary, [*MODELS, "params:data_generation"], ["vocabulary", "dropped_words"],
             name="build_vocabulary"),
        Node(make_ioi_prompts, ["vocabulary", "params:data_generation"], "ioi_prompts",
             name="make_ioi_prompts"),
        Node(make_anti_prompts, ["vocabulary", "params:data_generation"], "anti_prompts",
             name="make_anti_prompts"),
        Node(tokenise_for_models, ["ioi_prompts", "anti_prompts", *MODELS], "tokenised_prompts",
             name="tokenise_for_models"),
        Node(measure_baselines, ["tokenised_prompts", "baseline_partitions_done", *MODELS, "params:runtime"],
             "baseline_partitions", name="measure_baselines"),
        Node(summarise_baselines, ["baseline_partitions", "tokenised_prompts", *MODELS, "params:runtime",
                                   "params:seed", "params:baseline.n_boot"], "baseline", name="summarise_baselines"),
    ])
