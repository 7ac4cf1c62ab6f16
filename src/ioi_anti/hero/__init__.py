"""Hero heads: how one head's effect travels (dose, joint ablation, path patching, decomposition,
attention), the routes that summarise it, and the study of a model's heroes.
"""
