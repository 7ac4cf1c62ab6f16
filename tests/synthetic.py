"""Seeded synthetic stand-ins for the ablation pipeline's outputs (per_head, baseline, metadata, ...).

They have the catalog's column layout but invented numbers, so categorisation and reporting can be
tested without any model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr


@dataclass(frozen=True)
class SyntheticModel:
    """Shape and identity of one synthetic model."""

    model: str
    family: str
    n_params: int
    n_layers: int
    n_heads: int
    gap_ok: bool = True
    tuning: str = "base"
    quantisation: str = "none"


FOUR_MODELS = (
    SyntheticModel("gpt2", "gpt2", 124_439_808, 12, 12),
    SyntheticModel("gpt2-medium", "gpt2", 354_823_168, 24, 16),
    SyntheticModel("pythia-160m", "pythia", 162_322_944, 12, 12),
    SyntheticModel("opt-125m", "opt", 125_239_296, 12, 12),
)
SINGLE_MODEL = (SyntheticModel("smollm2-135m", "llama", 134_515_008, 30, 9, tuning="instruct"),)
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
OFFLINE_FOUR = (  # the four embedded models: three families, qwen2 at two sizes, base and instruction-tuned
    SyntheticModel("smollm2-135m", "llama", 134_515_008, 30, 9, tuning="instruct", quantisation="Q4_1"),
    SyntheticModel("gemma3-270m", "gemma", 268_098_176, 18, 4, quantisation="Q4_K_M"),
    SyntheticModel("qwen2.5-coder-0.5b", "qwen2", 630_167_424, 24, 14, tuning="instruct", quantisation="Q4_K_M"),
    SyntheticModel("qwen2.5-coder-1.5b", "qwen2", 1_777_088_000, 28, 12, tuning="instruct", quantisation="Q4_K_M"),
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
        "model": spec.model, "family": spec.family, "tuning": spec.tuning, "quantisation": spec.quantisation,
        "n_params": spec.n_params,
        "n_layers": spec.n_layers, "n_heads": spec.n_heads, "layer": np.repeat(np.arange(spec.n_layers), spec.n_heads),
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
                "model": model, "family": first["family"], "tuning": first["tuning"],
                "quantisation": first["quantisation"], "n_params": first["n_params"],
                "task": task,
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
        "runtime": {"device": "auto", "dtype": "float32", "tf32": False, "max_batch": 64},
    }


def make_attribution_agreement(per_head: pd.DataFrame) -> pd.DataFrame:
    """Agreement of the synthetic attribution Δ with the exact Δ, per model x task x τ."""
    rows = [
        {"model": model, "task": task, "n_heads": len(heads), "tau": tau,
         "spearman": float(spearmanr(heads[f"attr_delta_{task}"], heads[f"delta_{task}"]).statistic),
         "pearson": float(pearsonr(heads[f"attr_delta_{task}"], heads[f"delta_{task}"]).statistic),
         "n_strong": int((heads[f"delta_{task}"].abs() >= tau).sum()), "recall_at_k": 1.0, "recall_at_2k": 1.0,
         "sign_agreement": 1.0}
        for model, heads in per_head.groupby("model", sort=False)
        for task in ("ioi", "anti") for tau in (0.03, 0.05)
    ]
    return pd.DataFrame(rows)


HERO_MODELS = {"gpt2": 3, "pythia-160m": 2}  # models with hero heads -> automatic heroes (plus one named)
ATTENTION_TARGETS = {"ioi": ("IO", "S1", "S2"), "anti": ("all list items", "last list item")}
HERO_COLUMNS = ["model", "family", "tuning", "quantisation",
                "n_params", "hero", "layer", "head", "delta_ioi", "delta_ioi_low",
                "delta_ioi_high", "delta_anti", "delta_anti_low", "delta_anti_high", "category", "category_robust",
                "selected_by"]
STUDY_COLUMNS = {  # as ioi_anti.pipelines.hero_heads.nodes.STUDY_COLUMNS (not imported: that module loads torch)
    "dose": ["task", "alpha", "delta", "delta_low", "delta_high", "hero", "model"],
    "topk": ["task", "category", "k", "heads", "delta", "delta_low", "delta_high", "model"],
    "paths": ["task", "path", "receiver_layer", "receiver_head", "receiver_input", "receiver_category", "delta",
              "delta_low", "delta_high", "hero", "model"],
    "attention": ["task", "target", "mean", "std", "count", "hero", "model"],
    "decomposition": ["task", "level", "part", "reader", "reader_layer", "heads", "delta", "delta_low", "delta_high",
                      "fraction", "fraction_low", "fraction_high", "hero", "model"],
}
ROUTE_NAMES = ("direct", "IOI-only heads", "anti-only heads", "shared heads", "weak heads", "MLPs")  # routes.ROUTES


def _decomposition(rng: np.random.Generator, total: float, layer: int, n_layers: int) -> pd.DataFrame:
    """Total, routes (random shares of the total, a small remainder) and per-layer parts of one hero and task."""
    shares = rng.dirichlet(np.full(len(ROUTE_NAMES), 0.5)) * rng.uniform(0.8, 1.1)
    deltas = np.append(shares * total, total - shares.sum() * total)
    later = list(range(layer + 1, n_layers))
    readers = [("attention", r, "all heads") for r in later] + [("mlp", r, "") for r in range(layer, n_layers)]
    layer_deltas = rng.laplace(0.0, abs(total) / max(1, len(readers)), len(readers))
    frame = pd.DataFrame({
        "level": ["total", *["route"] * (len(ROUTE_NAMES) + 1), *["layer"] * len(readers)],
        "part": ["total", *ROUTE_NAMES, "remainder", *[f"{k} L{r}" for k, r, _ in readers]],
        "reader": ["", *[""] * (len(ROUTE_NAMES) + 1), *[k for k, _, _ in readers]],
        "reader_layer": [-1, *[-1] * (len(ROUTE_NAMES) + 1), *[r for _, r, _ in readers]],
        "heads": ["", *[""] * (len(ROUTE_NAMES) + 1), *[h for _, _, h in readers]],
        **_interval(rng, np.concatenate([[total], deltas, layer_deltas])),
    })
    frame["fraction"] = frame["delta"] / total
    frame["fraction_low"], frame["fraction_high"] = frame["fraction"] - 0.1, frame["fraction"] + 0.1
    return frame


def make_heroes(per_head: pd.DataFrame, n_auto: dict[str, int] | None = None, tau: float = 0.05) -> pd.DataFrame:
    """A ``hero_heads_for_paper`` table: per model, its strongest heads plus one named last-layer head.

    Models of ``per_head`` not in ``n_auto`` (default :data:`HERO_MODELS`) get no hero, as when no
    head's interval clears τ.
    """
    from ioi_anti.analysis.categories import categorise

    heads = categorise(per_head, tau)
    rows = []
    for model, n in (HERO_MODELS if n_auto is None else n_auto).items():
        frame = heads[heads["model"] == model]
        strength = np.maximum(frame["delta_ioi"].abs(), frame["delta_anti"].abs())
        auto = frame.loc[strength.nlargest(n).index].assign(selected_by="auto")
        last = frame["layer"].max()
        named = frame[(frame["layer"] == last) & (frame["head"] == 0)].assign(selected_by="named")
        rows.append(pd.concat([auto, named]))
    if not rows:
        return pd.DataFrame(columns=HERO_COLUMNS)
    table = pd.concat(rows, ignore_index=True)
    table["hero"] = [f"L{r.layer}H{r.head}" for r in table.itertuples()]
    return table[HERO_COLUMNS]


def _interval(rng: np.random.Generator, delta: np.ndarray) -> dict[str, np.ndarray]:
    half = rng.uniform(0.005, 0.03, len(delta))
    return {"delta": delta, "delta_low": delta - half, "delta_high": delta + half}


def make_hero_studies(
    heroes: pd.DataFrame, per_head: pd.DataFrame, seed: int = 0, dose_steps: int = 6, topk_max: int = 5,
    max_receivers: int = 6, tau: float = 0.05,
) -> dict[str, pd.DataFrame]:
    """``hero_dose_response``, ``hero_topk``, ``hero_paths``, ``hero_attention`` and ``hero_decomposition``.

    Like the pipeline, models without heroes have no rows and an empty study keeps its columns.
    """
    from ioi_anti.analysis.categories import categorise

    rng = np.random.default_rng(seed)
    heads = categorise(per_head, tau)
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in STUDY_COLUMNS}
    for model, model_heroes in heroes.groupby("model", sort=False):
        model_heads = heads[heads["model"] == model]
        for row in model_heroes.itertuples():
            ids = {"hero": row.hero, "model": model}
            receivers = model_heads[(model_heads["layer"] > row.layer) & (model_heads["category"] != "weak")]
            receivers = receivers.loc[np.maximum(receivers["delta_ioi"].abs(), receivers["delta_anti"].abs())
                                      .nlargest(max_receivers).index]
            for task in ("ioi", "anti"):
                total = float(getattr(row, f"delta_{task}"))
                alpha = np.linspace(0.0, 1.0, dose_steps)
                tables["dose"].append(pd.DataFrame(
                    {"task": task, "alpha": alpha, **_interval(rng, total * alpha ** rng.uniform(0.7, 1.5))} | ids))
                fixed = np.array([total, total * rng.uniform(0.1, 0.6), total + rng.normal(0, 0.002)])
                tables["paths"].append(pd.DataFrame(
                    {"task": task, "path": ["total", "direct", "all paths"], "receiver_layer": -1,
                     "receiver_head": -1, "receiver_input": "", "receiver_category": "", **_interval(rng, fixed)}
                    | ids))
                keys = [(r.layer, r.head, r.category, kind) for r in receivers.itertuples() for kind in "qkv"]
                if keys:
                    via = rng.laplace(0.0, abs(total) / 4 + 1e-3, len(keys))
                    tables["paths"].append(pd.DataFrame(
                        {"task": task, "path": [f"L{a}H{b}.{k}" for a, b, _, k in keys],
                         "receiver_layer": [a for a, *_ in keys], "receiver_head": [b for _, b, *_ in keys],
                         "receiver_input": [k for *_, k in keys], "receiver_category": [c for *_, c, _ in keys],
                         **_interval(rng, via)} | ids))
                n_layers = int(model_heads["n_layers"].iloc[0])
                tables["decomposition"].append(_decomposition(rng, total, row.layer, n_layers).assign(task=task, **ids))
                targets = ATTENTION_TARGETS[task]
                mean = rng.dirichlet(np.ones(len(targets) + 1))[: len(targets)]
                if task == "anti":
                    mean = np.array([mean[0] + mean[1], mean[1]])
                tables["attention"].append(pd.DataFrame(
                    {"task": task, "target": targets, "mean": mean, "std": rng.uniform(0.02, 0.2, len(targets)),
                     "count": 16} | ids))
        for category in ("IOI-only", "anti-only", "shared"):
            members = model_heads[model_heads["category"] == category]
            order = [f"L{a}H{b}" for a, b in zip(members["layer"], members["head"], strict=True)][:topk_max]
            for k in range(1, len(order) + 1):
                for task in ("ioi", "anti"):
                    delta = np.array([-0.1 * k if task == "ioi" else -0.04 * k]) + rng.normal(0, 0.02, 1)
                    tables["topk"].append(pd.DataFrame(
                        {"task": task, "category": category, "k": k, "heads": " ".join(order[:k]),
                         **_interval(rng, delta), "model": model}))
    return {name: pd.concat(frames, ignore_index=True)[STUDY_COLUMNS[name]] if frames
            else pd.DataFrame(columns=STUDY_COLUMNS[name]) for name, frames in tables.items()}


def published_format(per_head: pd.DataFrame, top_k: int, tau: float = 0.05,
                     x: str = "delta_ioi", y: str = "delta_anti") -> dict[str, pd.DataFrame]:
    """The tables the published scripts would write from ``per_head`` (SOURCE.md): the top-k most negative
    heads of each task joined with 0.0 fill, the Pearson r over that join, its category counts and the
    strongest head of each model in both lists as its hero, named as the published CSVs name their columns."""
    from ioi_anti.analysis.published import join_top_k

    joined = join_top_k(per_head, top_k, x, y).rename(columns={x: "delta_ioi", y: "delta_anti"})
    joined = joined.merge(per_head[["model", "family"]].drop_duplicates(), on="model")
    correlations, counts, heroes = [], [], []
    for model, rows in joined.groupby("model", sort=False):
        ioi, anti = rows["delta_ioi"].abs() >= tau, rows["delta_anti"].abs() >= tau
        correlations.append({"family": rows["family"].iloc[0], "model": model, "params_m": 0.0,
                             "corr": pearsonr(rows["delta_ioi"], rows["delta_anti"]).statistic})
        counts.append({"family": rows["family"].iloc[0], "model": model, "n_anti_only": (anti & ~ioi).sum(),
                       "n_ioi_only": (ioi & ~anti).sum(), "n_shared": (ioi & anti).sum(),
                       "n_weak": (~ioi & ~anti).sum()})
        both = rows[(rows["delta_ioi"] != 0.0) & (rows["delta_anti"] != 0.0)]  # heroes are in both lists
        strongest = both.loc[(both["delta_ioi"].abs() + both["delta_anti"].abs()).idxmax()]
        heroes.append({"family": strongest["family"], "model": model, "category": "shared",
                       **{c: strongest[c] for c in ("layer", "head", "delta_ioi", "delta_anti")}})
    return {"per_head": joined[["family", "model", "layer", "head", "delta_ioi", "delta_anti"]],
            "correlations": pd.DataFrame(correlations), "categories": pd.DataFrame(counts),
            "heroes": pd.DataFrame(heroes)}
