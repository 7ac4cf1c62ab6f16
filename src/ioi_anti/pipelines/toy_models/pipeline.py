"""Toy models pipeline: toy prompts -> trained models (resumable) -> per-head Δ, accuracy and losses ->
roles against the objective mix -> figures and the toy report."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ioi_anti.pipelines.toy_models.nodes import (
    make_toy_prompts,
    measure_toy_models,
    plot_toy_phase_space,
    plot_toy_roles,
    plot_toy_training,
    summarise_toy_roles,
    train_toy_models,
    write_toy_report,
)

PARAMS, STYLE = "params:toy_models", "params:reporting"
FIGURES = ("toy_roles_plot", "toy_phase_space_plot", "toy_training_plot")


def create_pipeline(**kwargs: object) -> Pipeline:
    """Build the toy_models pipeline."""
    return Pipeline([
        Node(make_toy_prompts, [PARAMS, "params:seed"], ["toy_prompts", "toy_tokens"], name="make_toy_prompts"),
        Node(train_toy_models, ["trained_toy_models_done", PARAMS, "params:seed"], "trained_toy_models",
             name="train_toy_models"),
        Node(measure_toy_models, ["trained_toy_models", "toy_tokens", PARAMS, "params:runtime", "params:seed"],
             ["toy_per_head", "toy_baseline", "toy_accuracy", "toy_losses"], name="measure_toy_models"),
        Node(summarise_toy_roles, ["toy_per_head", "toy_accuracy", PARAMS, "params:seed"],
             ["toy_learned", "toy_head_categories", "toy_model_roles", "toy_roles", "toy_sharing_test"],
             name="summarise_toy_roles"),
        Node(plot_toy_roles, ["toy_roles", "toy_model_roles", "toy_accuracy", PARAMS, STYLE], "toy_roles_plot",
             name="plot_toy_roles"),
        Node(plot_toy_phase_space, ["toy_head_categories", PARAMS, STYLE], "toy_phase_space_plot",
             name="plot_toy_phase_space"),
        Node(plot_toy_training, ["toy_losses", STYLE], "toy_training_plot", name="plot_toy_training"),
        Node(write_toy_report, {"summary": "toy_roles", "per_model": "toy_model_roles", "accuracy": "toy_accuracy",
                                "gaps": "toy_learned", "test": "toy_sharing_test", "params": PARAMS, "style": STYLE,
                                **{name: name for name in FIGURES}}, "toy_report", name="write_toy_report"),
    ])
