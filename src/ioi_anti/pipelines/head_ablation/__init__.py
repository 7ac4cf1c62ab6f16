"""head_ablation: exact per-head Delta_ioi and Delta_anti with intervals, and attribution patching."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
