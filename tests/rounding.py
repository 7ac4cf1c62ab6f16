"""Tolerances for reduced-precision tests, derived from the rounding measured on the machine at hand.

A bfloat16 result can be held only to bfloat16's rounding, and that rounding depends on the CPU's
kernels: with AMX, oneDNN's bfloat16 products accumulate in an order that depends on the batch
shape, so two paths that multiply the same numbers in batches of different sizes (the fast replay
and the naive forward pass) round differently; with AVX-512 BF16 alone they round identically.
Measured on one Xeon (docs/performance.md, "bfloat16 and the CPU's kernels"): with AMX the fast and
naive bfloat16 sweeps of SmolLM2 were 0.0166 apart in Δ where each lay 0.0123-0.0125 from float32
(1.33 times the floor); without AMX they were identical. A fixed tolerance taken from one machine
fails on the other.

So a reduced-precision test measures the floor first: how far one plain computation in the reduced
precision lands from the same computation in float32 (:func:`rounding_floor`). Two reduced-precision
paths, each about that far from float32, are at most about twice that far from each other
(:func:`assert_within_rounding`). Exact-equality claims stay in float32, where they belong.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ioi_anti.models.loading import LoadedModel
from ioi_anti.models.precision import MATRIX_LAYERS

ROUNDINGS = 2
"""Two paths compared, each carrying its own rounding of about the measured floor."""


def rounding_floor(reduced: Tensor, full: Tensor) -> float:
    """Largest |reduced − float32| over the elements: the rounding of the reduced precision here."""
    floor = float((reduced.float() - full.float()).abs().max())
    assert floor > 0, "the reduced precision did not act: its results equal float32's bit for bit"
    return floor


def tolerance(floor: float) -> float:
    """The largest difference allowed between two reduced-precision paths whose rounding floor is ``floor``."""
    return ROUNDINGS * floor


def assert_within_rounding(candidate: Tensor, reference: Tensor, floor: float, what: str) -> None:
    """``candidate`` and ``reference``, both in the reduced precision, agree within :func:`tolerance`."""
    gap = float((candidate.float() - reference.float()).abs().max())
    assert gap <= tolerance(floor), (
        f"{what}: {gap:.3g} apart, more than {ROUNDINGS} x the measured rounding floor {floor:.3g}")


MARGIN = 4
"""How many tolerances the largest effect must span for a comparison to test anything: a path that
dropped the ablation altogether would then be off by at least this many tolerances. Measured with
the floor of :func:`rounding_floor`: the tiny models' largest effects (weights of width 0.1) are
15-126 floors, the embedded models' largest Δ 33-48 floors."""


def assert_measurable(effects: Tensor, floor: float) -> None:
    """The effects compared are large against the tolerance (else the comparison could not fail)."""
    largest = float(effects.abs().max())
    assert largest >= MARGIN * tolerance(floor), (
        f"effects up to {largest:.3g} are within {MARGIN} tolerances ({tolerance(floor):.3g}): too small to test")


def products_bound(lm: LoadedModel, passes: int = 1) -> float:
    """Worst-case relative error when each bfloat16 matrix product of the blocks rounds its output once
    per pass (bfloat16's unit roundoff, 2^-8, each, adding up): a bound that holds on any CPU, for
    checks that reduced precision acted without acting far beyond its rounding."""
    products = sum(isinstance(m, MATRIX_LAYERS) for m in lm.bridge.blocks.modules())
    return passes * products * torch.finfo(torch.bfloat16).eps / 2
