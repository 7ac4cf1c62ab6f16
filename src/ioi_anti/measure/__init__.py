"""Measuring heads: the metrics of a task, the ablation of one head (hooks and the cached replay),
the sweep of every head of a model, its partitions on disk, and the per-head table.
"""
