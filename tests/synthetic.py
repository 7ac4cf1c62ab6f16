"""Seeded synthetic stand-ins for the ablation pipeline's outputs (per_head, baseline, metadata, ...).

They have the catalog's column layout but invented numbers, so categorisation and reporting can be
tested without any model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


@dataclass(frozen=True)
class SyntheticModel:
    """Shape and identity of one synthetic model."""

    model: str
    family: str
    n_params: int
    n_layers: int
    n_heads: int
    gap_ok: bool = True


FOUR_MODELS = (
    SyntheticModel("gpt2", "gpt2", 124_439_808, 12, 12),
    SyntheticModel("gpt2-medium", "gpt2", 354_823_168, 24, 16),
    SyntheticModel("pythia-160m", "pythia", 162_322_944, 12, 12),
    SyntheticModel("opt-125m", "opt", 125_239_296, 12, 12),
)
SINGLE_MODEL = (SyntheticModel("smollm2-135m", "llama", 134_515_008, 30, 9),)
NINE_MODELS = (
    *FOUR_MODELS[:2],
    SyntheticModel("gpt2-large", "gpt2", 774_030_080, 36, 20),
    SyntheticModel("gpt-neo-125m", "gpt-neo", 125_198_592, 12, 12),
    FOUR_MODELS[3],
    SyntheticModel("pythia-70m", "pythia", 70_426_624, 6, 8),
    FOUR_MODELS[2],
    SyntheticModel("pythia-410m", "pythia", 405_334_016, 24, 16),
    SyntheticModel("pythia-1b", "pythia", 1_011_781_632, 16, 8),
)
GAPS = {"ioi": 2.5, "anti": 1.2}
N_PROMPTS = {"ioi": 40, "anti": 45}


def _model_heads(spec: SyntheticModel, rng: np.random.Generator, ablation: str, scale: float) -> pd.DataFrame:
    """Heads of one model: Laplace-tailed Δ (a few strong heads), Δ_anti loosely coupled to Δ_IOI."""
    n = spec.n_layers * spec.n_heads
    scale = scale if spec.gap_ok else 20 * scale
    delta = {"ioi": rng.laplace(0.0, scale, n)}
    delta["anti"] = 0.3 * delta["ioi"] + rng.laplace(0.0, scale, n)
    gaps = {"ioi": GAPS["ioi"], "anti": GAPS["anti"] if spec.gap_ok else -0.05}
    frame = {
        "model": spec.model, "family": spec.family, "n_params": spec.n_params, "n_layers": spec.n_layers,
        "n_heads": spec.n_heads, "layer": np.repeat(np.arange(spec.n_layers), spec.n_heads),
        "head": np.tile(np.arange(spec.n_heads), spec.n_layers),
    }
    for task in ("ioi", "anti"):
        half = rng.uniform(0.003, 0.04, n)
        frame[f"delta_{task}"] = delta[task]
        frame[f"delta_{task}_low"] = delta[task] - half * rng.uniform(0.5, 1.5, n)
        frame[f"delta_{task}_high"] = delta[task] + half * rng.uniform(0.5, 1.5, n)
    for task in ("ioi", "anti"):
        frame[f"attr_delta_{task}"] = delta[task] + rng.normal(0.0, scale / 3, n)
    frame |= {"ablation": ablation, "n_prompts_ioi": N_PROMPTS["ioi"], "n_prompts_anti": N_PROMPTS["anti"]}
    frame |= {"gap_ioi": gaps["ioi"], "gap_anti": gaps["anti"], "gap_ok": spec.gap_ok}
    return pd.DataFrame(frame)


def make_per_head(
    models: tuple[SyntheticModel, ...] = FOUR_MODELS, seed: int = 0, ablation: str = "mean", scale: float = 0.02
) -> pd.DataFrame:
    """A ``per_head`` table for ``models`` with seeded random Δ."""
    rng = np.random.default_rng(seed)
    return pd.concat([_model_heads(spec, rng, ablation, scale) for spec in models], ignore_index=True)


def make_baseline(per_head: pd.DataFrame) -> pd.DataFrame:
    """A ``baseline`` table (one row per model x task) consistent with ``per_head``'s gaps."""
    rows = []
    for model, heads in per_head.groupby("model", sort=False):
        first = heads.iloc[0]
        for task in ("ioi", "anti"):
            gap = float(first[f"gap_{task}"])
            clean = 1.0 + gap
            rows.append({
                "model": model, "family": first["family"], "n_params": first["n_params"], "task": task,
                "n_prompts": N_PROMPTS[task], "clean_metric": clean, "clean_low": clean - 0.2,
                "clean_high": clean + 0.2, "ref_metric": 1.0, "ref_low": 0.8, "ref_high": 1.2, "gap": gap,
                "gap_low": gap - 0.3, "gap_high": gap + 0.3, "accuracy": 0.9 if gap > 0 else 0.4,
                "accuracy_low": 0.8 if gap > 0 else 0.3, "accuracy_high": 0.95 if gap > 0 else 0.5,
                "gap_ok": bool(first["gap_ok"]),
            })
    return pd.DataFrame(rows)


def make_run_metadata(per_head: pd.DataFrame) -> dict:
    """A ``run_metadata`` dict for ``per_head``."""
    return {
        "models": list(per_head["model"].unique()), "seed": 0, "ablation": str(per_head["ablation"].iloc[0]),
        "n_prompts_ioi": N_PROMPTS["ioi"], "n_prompts_anti": N_PROMPTS["anti"],
        "versions": {"torch": "2.13.0", "transformers": "5.1.0", "kedro": "1.7.0"}, "device": "cpu",
    }


def make_attribution_agreement(per_head: pd.DataFrame) -> pd.DataFrame:
    """Spearman agreement of the synthetic attribution Δ with the exact Δ, per model x task."""
    rows = [
        {"model": model, "task": task, "n_heads": len(heads),
         "spearman": float(spearmanr(heads[f"attr_delta_{task}"], heads[f"delta_{task}"]).statistic)}
        for model, heads in per_head.groupby("model", sort=False)
        for task in ("ioi", "anti")
    ]
    return pd.DataFrame(rows)
