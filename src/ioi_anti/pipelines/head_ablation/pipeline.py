"""head_ablation pipeline: resumable per-layer sweep -> per-head table with intervals (and, where the
quantisation pipeline has measured a model re-quantised, which heads are ``quant_sensitive``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from .nodes import summarise_heads, sweep_heads

MODELS = ["params:models", "params:model_registry", "params:runtime"]


def create_pipeline(**kwargs: object) -> Pipeline:
    """Measure every head of every model of the run for every task of the run."""
    return Pipeline([
        Node(sweep_heads, ["params:tasks", "tokenised_prompts", "baseline_partitions", "head_effects_partitions_done",
                           *MODELS, "params:head_ablation", "params:categorisation"],
             "head_effects_partitions", name="sweep_heads"),
        Node(summarise_heads, ["params:tasks", "head_effects_partitions", "baseline_partitions", "tokenised_prompts",
                               "requantised_sweeps_done", *MODELS, "params:head_ablation", "params:categorisation",
                               "params:quantisation", "params:seed"],
             ["per_head", "attribution_agreement", "run_metadata"], name="summarise_heads"),
    ])
