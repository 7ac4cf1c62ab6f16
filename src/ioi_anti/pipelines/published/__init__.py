"""Published pipeline: the study's published tables audited, and the run's results set beside them."""

from ioi_anti.pipelines.published.pipeline import create_pipeline

__all__ = ["create_pipeline"]
