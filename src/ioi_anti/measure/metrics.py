"""The task metric, accuracy and bootstrap intervals: the one place they are defined.

A task metric is linear in the END-token logits of a few candidate tokens:
``m = sum_k weights_k * logits[tokens_k]`` (see :mod:`ioi_anti.tasks.prompts` for the weights of
IOI and anti-repetition). A head's effect is ``Delta = mean_i(m_ablated_i - m_clean_i) / gap``
with ``gap = mean_i(m_clean_i - m_reference_i)`` over paired prompts; with
``head_ablation.delta: raw`` (the published study's protocol) the gap is left out and Δ is the mean
change of the metric itself, in logits.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ioi_anti.params import DELTA_UNITS


def delta_divisors(gaps: Float[np.ndarray, " n"], unit: str) -> Float[np.ndarray, " n"]:
    """What a head's per-prompt effects are divided by (through their mean) to give Δ in ``unit``:
    the prompts' gaps (normalised) or ones (raw)."""
    if unit not in DELTA_UNITS:
        raise ValueError(f"Unknown Δ unit {unit!r}; choose one of {DELTA_UNITS}.")
    return gaps if unit == "normalised" else np.ones_like(gaps)


def delta_unit_words(unit: str) -> str:
    """How a report states Δ's unit."""
    return ("the mean change of the task metric over the task gap (normalised)" if unit == "normalised" else
            "the mean change of the task metric in logits (raw, not normalised by the gap, as published)")


def task_metric(cand_logits: Float[Tensor, "n k"], weights: Float[Tensor, "n k"]) -> Float[Tensor, " n"]:
    """Weighted sum of candidate logits (padding candidates carry weight 0)."""
    return (cand_logits * weights).sum(-1)


def task_accuracy(cand_logits: Float[Tensor, "n k"], weights: Float[Tensor, "n k"]) -> Bool[Tensor, " n"]:
    """Whether the best positively weighted candidate beats every negatively weighted one.

    IOI: IO above S. Anti-repetition: some new item above every in-context item.
    """
    neg_inf = torch.finfo(cand_logits.dtype).min
    best_pos = torch.where(weights > 0, cand_logits, neg_inf).amax(-1)
    best_neg = torch.where(weights < 0, cand_logits, neg_inf).amax(-1)
    return best_pos > best_neg


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` resamples (with replacement) of ``n`` prompt indices; shared across heads."""
    if n < 1:
        raise ValueError("Cannot bootstrap over an empty prompt set.")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis."""
    tail = 100 * (1 - level) / 2
    return np.percentile(samples, tail, axis=-1), np.percentile(samples, 100 - tail, axis=-1)


def bootstrap_mean(values: np.ndarray, idx: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` with its percentile bootstrap interval."""
    low, high = interval(values[idx].mean(-1), level)
    return float(values.mean()), float(low), float(high)


def bootstrap_delta(
    effects: Float[np.ndarray, "heads n"], gaps: Float[np.ndarray, " n"], idx: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delta per head with a ratio bootstrap: prompts are resampled jointly for effect and gap."""
    delta = effects.mean(-1) / gaps.mean()
    samples = effects[:, idx].mean(-1) / gaps[idx].mean(-1)
    low, high = interval(samples, level)
    return delta, low, high
