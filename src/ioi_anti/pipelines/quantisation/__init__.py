"""Quantisation pipeline: what quantised weights do to every head's Δ and category, exactly on the toy models
(float32 against each GGUF type) and by sensitivity on the run's models (re-quantised); not part of the
default run: ``kedro run --pipelines quantisation``."""

from ioi_anti.pipelines.quantisation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
