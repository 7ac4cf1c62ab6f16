"""Categorisation pipeline: head categories at each τ, strong-head counts and Δ correlations."""

from ioi_anti.pipelines.categorisation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
