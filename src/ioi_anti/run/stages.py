"""What each step's results depend on, as a short id that every saved table carries.

Each pipeline is a *stage*; a stage's id hashes the settings that can change its numbers and the
ids of the stages it reads, so a change of prompts changes every id after data generation, and a
change of τ only those of categorisation and what follows. :class:`ioi_anti.run.hooks.RunGuard` stamps
the id into every table a node saves (column ``settings_id``; key ``settings_id`` of a JSON record)
and checks the stamps of every table a node loads against the ids of the current settings, so a
report can never describe one run while showing another's numbers. Resumable partitions are not
stamped: their keys already hash exactly what they depend on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ioi_anti.measure.partitions import numeric_runtime
from ioi_anti.params import RunSettings

COLUMN = "settings_id"
STAGES = ("data_generation", "head_ablation", "categorisation", "hero_heads", "reporting")
UPSTREAM = {"data_generation": (), "head_ablation": ("data_generation",), "categorisation": ("head_ablation",),
            "hero_heads": ("head_ablation",), "reporting": ("categorisation", "hero_heads")}


def stage_settings(settings: RunSettings) -> dict[str, dict[str, Any]]:
    """The settings each stage's numbers depend on (batch sizes, which change none, are left out)."""
    params = settings.model_dump()
    sweep = {key: value for key, value in params["head_ablation"].items() if key not in ("seed", "screen")}
    if settings.head_ablation.ablation == "resample":
        sweep["seed"] = settings.head_ablation.seed
    if settings.head_ablation.mode == "screen":
        sweep["screen"] = params["head_ablation"]["screen"]
        sweep["screen_taus"] = [settings.categorisation.tau, *settings.categorisation.sensitivity_taus]
    heroes = params["hero_heads"] | {"tau": settings.categorisation.tau, "seed": settings.seed,
                                     "pair": settings.categorisation.pair}
    if settings.head_ablation.ablation == "resample":
        heroes["resample_seed"] = settings.head_ablation.seed
    return {
        "data_generation": {
            "tasks": settings.tasks, "models": settings.models,
            "model_registry": {m: params["model_registry"].get(m.split("@")[0]) for m in settings.models},
            "data_generation": params["data_generation"], "baseline": params["baseline"], "seed": settings.seed,
            "runtime": numeric_runtime(settings.runtime),
        },
        "head_ablation": {"head_ablation": sweep, "seed": settings.seed,  # quant_sensitive: against this type
                          "requantise_to": settings.quantisation.requantise_to},
        "categorisation": {"categorisation": params["categorisation"], "seed": settings.seed},
        "hero_heads": {"hero_heads": heroes},
        "reporting": {"reporting": params["reporting"]},
    }


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept whole), for naming what differs."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, name + ".")
        else:
            flat[name] = value
    return flat


def stage_ids(settings: RunSettings) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Id of every stage, and the full settings (its own and its upstream stages') behind each id."""
    own = stage_settings(settings)
    ids: dict[str, str] = {}
    full: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        full[stage] = {key: value for up in UPSTREAM[stage] for key, value in full[up].items()} | flatten(own[stage])
        payload = json.dumps([own[stage], [ids[up] for up in UPSTREAM[stage]]], sort_keys=True, default=str)
        # "s" first: an all-digit id, or one like "12e456789012", would be read back from a CSV as a number
        ids[stage] = "s" + hashlib.sha256(payload.encode()).hexdigest()[:12]
    return ids, full


def differences(saved: Mapping[str, Any], now: Mapping[str, Any], limit: int = 8) -> list[str]:
    """Settings that differ between a saved result and this run, one line each."""
    keys = sorted(set(saved) | set(now))
    lines = [f"{key}: {saved.get(key, '(not set)')!r} there, {now.get(key, '(not set)')!r} now"
             for key in keys if saved.get(key) != now.get(key)]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def ancestors(stage: str) -> list[str]:
    """``stage`` and every stage it reads, directly or not, in run order."""
    found = {stage}
    for up in reversed(STAGES[: STAGES.index(stage)]):
        if any(up in UPSTREAM[down] for down in found):
            found.add(up)
    return [s for s in STAGES if s in found]


def first_changed(stage: str, settings: RunSettings, saved: Mapping[str, Any]) -> str:
    """The earliest stage feeding ``stage`` whose own settings differ from ``saved``: where to re-run from."""
    own = {name: flatten(values) for name, values in stage_settings(settings).items()}
    for up in ancestors(stage):
        if any(saved.get(key) != value for key, value in own[up].items()):
            return up
    return stage
