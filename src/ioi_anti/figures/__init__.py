"""Figures: the style kit every figure shares, the study's figures, and those of hero heads,
training checkpoints, task roles and the interactive phase space.
"""
