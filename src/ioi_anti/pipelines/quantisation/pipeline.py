"""Quantisation pipeline: toy models quantised to each GGUF type, and the run's models re-quantised, each
measured again and compared with its reference -> the quantisation report."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ioi_anti.pipelines.quantisation.nodes import (
    compare_requantised,
    compare_toy_quantisation,
    measure_quantised_toy_models,
    sweep_requantised,
    write_quantisation_report,
)

RUN = ["params:tasks", "params:models", "params:model_registry", "params:runtime", "params:head_ablation",
       "params:categorisation", "params:quantisation", "params:seed"]


def create_pipeline(**kwargs: object) -> Pipeline:
    """Build the quantisation pipeline."""
    return Pipeline([
        Node(measure_quantised_toy_models, ["trained_toy_models_done", "toy_tokens", "toy_learned", "params:toy_models",
                                            "params:quantisation", "params:runtime", "params:seed"],
             ["toy_quant_per_head", "toy_quant_accuracy", "toy_quant_tensors"], name="measure_quantised_toy_models"),
        Node(compare_toy_quantisation, ["toy_per_head", "toy_quant_per_head", "toy_accuracy", "toy_quant_accuracy",
                                        "toy_learned", "params:toy_models"], ["toy_quant_heads", "toy_quant_effects"],
             name="compare_toy_quantisation"),
        Node(sweep_requantised, ["requantised_sweeps_done", "tokenised_prompts", *RUN], "requantised_sweeps",
             name="sweep_requantised"),
        Node(compare_requantised, ["requantised_sweeps", "tokenised_prompts", "per_head", *RUN],
             ["quant_heads", "quant_effects", "quant_tensors"], name="compare_requantised"),
        Node(write_quantisation_report, {"toy_effects": "toy_quant_effects", "toy_tensors": "toy_quant_tensors",
                                         "effects": "quant_effects", "tensors": "quant_tensors", "heads": "quant_heads",
                                         "reference": "per_head", "tasks": "params:tasks",
                                         "categorisation": "params:categorisation",
                                         "quantisation": "params:quantisation", "toy": "params:toy_models"},
             "quantisation_report", name="write_quantisation_report"),
    ])
