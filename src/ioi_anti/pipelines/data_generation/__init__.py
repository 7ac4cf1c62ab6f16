"""data_generation: prompt datasets, tokenised prompts per model, and baseline behaviour."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
