"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

OPTIONAL = ("toy_models",)


def register_pipelines() -> dict[str, Pipeline]:
    """Register the pipelines found under ``ioi_anti.pipelines``; ``__default__`` runs all but ``toy_models``
    (which trains toy models of its own: ``kedro run --pipeline toy_models``)."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(p for name, p in pipelines.items() if name not in OPTIONAL)
    return pipelines
