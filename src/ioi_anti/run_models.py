"""The models of a run: resolved from configuration and checked before any heavy work."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ioi_anti.models import ModelConfigError, ModelSpec, ModelUnavailableError, check_available

logger = logging.getLogger(__name__)


def resolve_models(models: Sequence[str], registry: Mapping[str, Mapping[str, Any]]) -> list[ModelSpec]:
    """Specs of the run's models, in order; unknown ids and duplicates fail with a clear message."""
    if not models:
        raise ModelConfigError("`models` is empty: name at least one model id from `model_registry`.")
    if len(set(models)) != len(models):
        raise ModelConfigError(f"`models` lists a model twice: {list(models)}.")
    return [ModelSpec.from_registry(model_id, dict(registry)) for model_id in models]


def check_run_models(models: Sequence[str], registry: Mapping[str, Mapping[str, Any]]) -> list[ModelSpec]:
    """Resolve the run's models and fail fast, naming every one of them that this machine cannot load."""
    specs = resolve_models(models, registry)
    problems = []
    for spec in specs:
        try:
            check_available(spec)
        except (ModelUnavailableError, ModelConfigError) as error:
            problems.append(str(error))
    if len(problems) == 1:
        raise ModelUnavailableError(problems[0])
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise ModelUnavailableError(f"{len(problems)} of {len(specs)} models cannot be loaded here:\n{listed}")
    logger.info("Run models: %s", ", ".join(s.model_id for s in specs))
    return specs
