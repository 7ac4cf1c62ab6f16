"""Models: the registry entry (spec), where weights come from (sources, chunks), loading and its
cache (loading), precision, and checkpoints over training.
"""
