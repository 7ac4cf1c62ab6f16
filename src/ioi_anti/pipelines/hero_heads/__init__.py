"""hero_heads: causal case studies of the heads that serve IOI, anti-repetition, or both."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
