"""The run's metadata: what a reader needs to reproduce it (tasks, models, prompts, ablation, seed,
device, Python, machine and package versions).
"""
from __future__ import annotations

import platform
from importlib.metadata import version
from typing import Any

import pandas as pd

from ioi_anti.models.loading import resolve_device
from ioi_anti.params import HeadAblation, Runtime
from ioi_anti.tasks import load_tasks

VERSIONED_PACKAGES = ("torch", "transformers", "transformer-lens", "kedro", "kedro-datasets", "ioi_anti")


def run_metadata(per_head: pd.DataFrame, tasks: list[str], models: list[str], runtime: Runtime,
                 params: HeadAblation, seed: int) -> dict[str, Any]:
    """What a reader needs to reproduce the run: tasks (by name, as the tables name them: ``tasks`` may give
    a user's task by import path), models, prompts, ablation, seed, versions."""
    names = [task.name for task in load_tasks(tasks)]
    first = per_head.groupby("model").first()
    return {
        "tasks": names, "models": list(models),
        "model_config": first[["family", "tuning", "quantisation", "n_params", "n_layers", "n_heads"]]
        .reset_index().to_dict("records"),
        "ablation": params.ablation, "mode": params.mode, "delta": params.delta, "n_boot": params.n_boot,
        "ci": params.ci, "seed": seed,
        **{f"n_prompts_{task}": int(first[f"n_prompts_{task}"].max()) for task in names},
        "runtime": runtime.model_dump(), "device": str(resolve_device(runtime.device)),
        "python": platform.python_version(), "machine": platform.platform(),
        "versions": {name: version(name) for name in VERSIONED_PACKAGES},
    }
