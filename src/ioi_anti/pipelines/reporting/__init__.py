"""Reporting pipeline: figures, the correlation table and the Markdown report."""

from ioi_anti.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
