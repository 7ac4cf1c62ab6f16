"""The baseline of a model on a task: clean and reference metrics, the gap and the accuracy, each
with a percentile bootstrap interval over paired prompts.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ioi_anti.measure.metrics import bootstrap_indices, bootstrap_mean
from ioi_anti.models.checkpoints import parse_model_id


def baseline_row(frame: pd.DataFrame, task: str, seed: int, n_boot: int) -> dict[str, Any]:
    """One baseline row: means with percentile bootstrap intervals over paired prompts."""
    idx = bootstrap_indices(len(frame), n_boot, seed)
    first = frame.iloc[0]
    checkpoint = parse_model_id(str(first["model_id"]))
    row: dict[str, Any] = {"model": first["model_id"], "checkpoint": checkpoint.label,
                           "training_step": checkpoint.training_step, "family": first["family"],
                           "tuning": first["tuning"], "quantisation": first["quantisation"],
                           "n_params": int(first["n_params"]), "task": task,
                           "n_prompts": len(frame)}
    series = {
        "clean": frame["m_clean"].to_numpy(), "ref": frame["m_ref"].to_numpy(),
        "gap": (frame["m_clean"] - frame["m_ref"]).to_numpy(), "accuracy": frame["correct_clean"].to_numpy(float),
    }
    for name, values in series.items():
        mean, low, high = bootstrap_mean(values, idx)
        prefix = {"clean": "clean_metric", "ref": "ref_metric"}.get(name, name)
        row[prefix] = mean
        base = prefix.removesuffix("_metric")
        row[f"{base}_low"], row[f"{base}_high"] = low, high
    row["gap_ok"] = bool(row["gap_low"] > 0)
    row["n_wrong"] = int(len(frame) - frame["correct_clean"].sum())
    return row
