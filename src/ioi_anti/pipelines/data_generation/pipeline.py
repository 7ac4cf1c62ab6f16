"""data_generation pipeline: each task's prompts -> tokenised prompts -> baseline per model and task."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from .nodes import (
    make_prompts,
    measure_baselines,
    summarise_baselines,
    tokenise_for_models,
)

MODELS = ["params:models", "params:model_registry"]


def create_pipeline(**kwargs: object) -> Pipeline:
    """Build the prompt datasets once for the whole run and measure each model's baseline."""
    return Pipeline([
        Node(make_prompts, ["params:tasks", *MODELS, "params:data_generation"], ["prompts", "dropped_words"],
             name="make_prompts"),
        Node(tokenise_for_models, ["prompts", "params:tasks", *MODELS], "tokenised_prompts",
             name="tokenise_for_models"),
        Node(measure_baselines, ["tokenised_prompts", "baseline_partitions_done", *MODELS, "params:runtime"],
             "baseline_partitions", name="measure_baselines"),
        Node(summarise_baselines, ["baseline_partitions", "tokenised_prompts", *MODELS, "params:runtime",
                                   "params:seed", "params:baseline.n_boot"], "baseline", name="summarise_baselines"),
    ])
