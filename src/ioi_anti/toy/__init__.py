"""Toy models trained from scratch with controlled IOI-like vs anti-repetition-like objectives.

:mod:`~ioi_anti.toy.language` makes the synthetic language and its training sequences,
:mod:`~ioi_anti.toy.tasks` its two tasks (tasks of :mod:`ioi_anti.tasks`), :mod:`~ioi_anti.toy.train`
trains a model of the grid, :mod:`~ioi_anti.toy.measure` measures it with the study's own code and
:mod:`~ioi_anti.toy.roles` summarises roles against the objective mix.
"""
