"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from ioi_anti.pipelines import categorisation, data_generation, head_ablation, hero_heads, reporting
from ioi_anti.run.stages import STAGES

OPTIONAL = ("toy_models", "quantisation")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the pipelines found under ``ioi_anti.pipelines``; ``__default__`` runs all but ``toy_models``
    (which trains toy models of its own: ``kedro run --pipelines toy_models``) and ``quantisation`` (which
    measures the toy models and the run's models again with quantised weights)."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(p for name, p in pipelines.items() if name not in OPTIONAL)
    return pipelines


def stage_outputs() -> dict[str, set[str]]:
    """Every stage's output datasets (a stage is a pipeline: :mod:`ioi_anti.run.stages`), built here rather
    than found by Kedro, whose discovery holds only the pipelines a ``kedro run --pipelines X`` asked for."""
    modules = {"data_generation": data_generation, "head_ablation": head_ablation, "categorisation": categorisation,
               "hero_heads": hero_heads, "reporting": reporting}
    return {stage: modules[stage].create_pipeline().all_outputs() for stage in STAGES}
