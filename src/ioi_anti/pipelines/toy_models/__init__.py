"""Toy models pipeline: train small transformers with controlled IOI / anti-repetition objectives and
measure their heads' roles (not part of the default run: ``kedro run --pipelines toy_models``)."""

from ioi_anti.pipelines.toy_models.pipeline import create_pipeline

__all__ = ["create_pipeline"]
