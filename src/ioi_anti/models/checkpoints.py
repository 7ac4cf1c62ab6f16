"""Model ids at a training checkpoint: ``<registry id>@<revision>``, e.g. ``pythia-160m@step3000``.

Kept free of torch so that tables and figures can read checkpoints from model ids alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STEP = re.compile(r"step(\d+)")


@dataclass(frozen=True)
class Checkpoint:
    """What a run's model id says: the registry entry, the Hub revision and its training step."""

    base_model: str
    revision: str | None
    training_step: float  # NaN for the final weights (no revision) or a revision without a step number

    @property
    def label(self) -> str:
        """The revision, or ``final`` for the registry entry's default weights."""
        return self.revision or "final"


def parse_model_id(model_id: str) -> Checkpoint:
    """Split ``base@revision``; the training step is read from a ``step<N>`` revision (Pythia's names)."""
    base, _, revision = model_id.partition("@")
    if not base or (_ and not revision):
        raise ValueError(f"Model id {model_id!r} is not of the form <registry id> or <registry id>@<revision>.")
    match = STEP.fullmatch(revision) if revision else None
    return Checkpoint(base, revision or None, float(match.group(1)) if match else float("nan"))
