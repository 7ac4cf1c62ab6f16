"""The project's base parameters (conf/base) for tests: raw, with one setting changed, or typed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

from ioi_anti.params import RunSettings
from ioi_anti.run.validation import CONFIG_LOADER_ARGS

PROJECT = Path(__file__).resolve().parents[1]


def raw_params() -> dict[str, Any]:
    """Every parameter of conf/base (and the empty conf/local), read as `kedro run` reads them."""
    return OmegaConfigLoader(str(PROJECT / "conf"), **CONFIG_LOADER_ARGS)["parameters"]


def with_(params: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``params`` with the setting at ``dotted`` (e.g. ``runtime.max_batch``) set to ``value``."""
    changed = copy.deepcopy(params)
    *path, last = dotted.split(".")
    target = changed
    for part in path:
        target = target[part]
    target[last] = value
    return changed


def settings(**changes: Any) -> RunSettings:
    """The base settings, typed, with ``changes`` given as ``group__key=value`` (``__`` for a dot)."""
    params = raw_params()
    for key, value in changes.items():
        params = with_(params, key.replace("__", "."), value)
    return RunSettings.model_validate(params)
