"""Benchmark mixed precision (``runtime.dtype: bfloat16``) against float32 on the embedded models.

For each model, in one process and on the default run's prompts: the baseline and the exact head
sweep in float32, then the same in the half type (each precision's Δ normalised by its own baseline,
as a run in that precision would be). Prints, per model and task: the sweep's speed ratio; the
largest and median |Δ_half − Δ_fp32|, also as a fraction of the head's float32 95 % interval width;
then, per τ, every head whose category changes and whether its float32 interval contains τ for each
task whose strong flag flipped; and the correlation and strong-head counts of both runs side by side.

Run: ``python benchmarks/bench_precision.py [--models smollm2-135m gemma3-270m] [--half bfloat16]``;
prints Markdown for docs/performance.md. Run it alone: two torch processes on two cores slow each
other down. ``--layers`` replays those layers only (both precisions) and extrapolates the sweep
times as ``bench_screen.py`` does, for models whose sweep takes most of an hour.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_screen import default_prompts, replay_share
from compare_runs import flips

from ioi_anti.analysis.categories import bootstrap_correlations, categorise
from ioi_anti.measure.metrics import bootstrap_delta, bootstrap_indices
from ioi_anti.measure.sweep import ModelSweep, baseline_table
from ioi_anti.models.loading import load_model, load_tokenizer, release_models
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import HeadAblation, Precision, Runtime
from ioi_anti.report.markdown import markdown_table
from ioi_anti.run.validation import project_settings
from ioi_anti.tasks import PAIR as TASKS
from ioi_anti.tasks import prompts as P

ROOT = Path(__file__).resolve().parents[1]


def measure(spec: ModelSpec, tokens: pd.DataFrame, runtime: Runtime, precision: Precision, layers: list[int] | None,
            params: HeadAblation, seed: int) -> tuple[pd.DataFrame, float]:
    """One precision's per-head table (its own baseline) and its sweep time (clean passes and ablation
    values included, loading not), extrapolated to every layer when ``layers`` samples them."""
    lm = load_model(spec, "cpu", precision, keep_loaded_gb=runtime.keep_loaded_gb)
    baseline = baseline_table(lm, tokens, runtime.max_batch)
    chosen = list(range(lm.n_layers)) if layers is None else layers
    start = time.perf_counter()
    sweep = ModelSweep(spec, tokens, runtime.model_copy(update={"dtype": precision}), "mean", seed)
    _ = sweep.states
    fixed = time.perf_counter() - start
    long = pd.concat([sweep.layer_effects(layer) for layer in chosen], ignore_index=True)
    elapsed = fixed + (time.perf_counter() - start - fixed) * replay_share(lm.n_layers, chosen)
    sweep.close()
    return head_table(long, baseline, params, seed), elapsed


def head_table(long: pd.DataFrame, baseline: pd.DataFrame, params: HeadAblation, seed: int) -> pd.DataFrame:
    """Δ per measured head and task with the run's paired ratio bootstrap (:func:`bootstrap_delta`, as in
    the pipeline's per-head table, which also needs attribution estimates of every head, not measured here)."""
    out = long[["layer", "head"]].drop_duplicates().sort_values(["layer", "head"], ignore_index=True)
    for task in TASKS:
        base = baseline[baseline["task"] == task].sort_values("pair_id")
        gaps = (base["m_clean"] - base["m_ref"]).to_numpy()
        wide = long[long["task"] == task].pivot_table(index=["layer", "head"], columns="pair_id", values="effect")
        wide = wide.reindex(index=pd.MultiIndex.from_frame(out), columns=base["pair_id"].to_numpy()).to_numpy()
        idx = bootstrap_indices(len(gaps), params.n_boot, seed)
        out[f"delta_{task}"], out[f"delta_{task}_low"], out[f"delta_{task}_high"] = bootstrap_delta(
            wide, gaps, idx, params.ci)
    facts = baseline.iloc[0]
    return out.assign(model=facts["model_id"], family=facts["family"], tuning=facts["tuning"],
                      n_params=facts["n_params"], n_layers=facts["n_layers"], n_heads=facts["n_heads"],
                      ablation="mean", gap_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="model ids (default: the run's `models`)")
    parser.add_argument("--half", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--layers", nargs="+", type=int, default=None,
                        help="replay these layers only, and extrapolate both sweeps' times to every layer")
    args = parser.parse_args()
    settings = project_settings(ROOT / "conf")
    runtime, params, seed = settings.runtime.model_copy(update={"device": "cpu"}), settings.head_ablation, settings.seed
    taus = sorted(set(settings.categorisation.taus) & {0.03, 0.05}, reverse=True)
    specs = [ModelSpec.from_registry(m, settings.model_registry) for m in args.models or settings.models]
    prompts = default_prompts(specs, settings.data_generation)
    n = {task: settings.data_generation.section(task)["n_prompts"] for task in TASKS}

    print(f"Machine: {platform.platform()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"default prompts ({n['ioi']} IOI + {n['anti']} anti), mean ablation, "
          f"exact sweep of every head{'' if args.layers is None else ' of layers ' + str(args.layers)}.\n")
    summary, notes = [], []
    for spec in specs:
        tokens = P.tokenise_prompts(prompts, load_tokenizer(spec), spec.prepend_bos)
        ref, t_ref = measure(spec, tokens, runtime, "float32", args.layers, params, seed)
        half, t_half = measure(spec, tokens, runtime, args.half, args.layers, params, seed)
        release_models()
        for task in TASKS:
            diff = (half[f"delta_{task}"] - ref[f"delta_{task}"]).abs()
            width = ref[f"delta_{task}_high"] - ref[f"delta_{task}_low"]
            summary.append({"model": spec.model_id, "task": task, "fp32 sweep (s)": t_ref,
                            f"{args.half} sweep (s)": t_half, "speed-up": t_ref / t_half,
                            "max |ΔΔ|": diff.max(), "median |ΔΔ|": diff.median(),
                            "max |ΔΔ| / CI width": (diff / width).max(),
                            "median |ΔΔ| / CI width": (diff / width).median()})
        for tau in taus:
            changed = flips(ref, half, tau)
            said = f"{len(changed)} change: " + "; ".join(changed) if changed else "no head changes category"
            notes.append(f"- {spec.model_id}, τ = {tau:g}: {said}")
        for name, table in (("float32", ref), (args.half, half)):
            row = bootstrap_correlations(table["delta_ioi"].to_numpy(float), table["delta_anti"].to_numpy(float),
                                         settings.categorisation.n_boot, np.random.default_rng(seed), 0.95)
            counts = {tau: categorise(table, tau)["category"].value_counts() for tau in taus}
            notes.append(f"  - {name}: Pearson r {row['pearson']:.3f} [{row['pearson_low']:.2f}, "
                         f"{row['pearson_high']:.2f}], Spearman {row['spearman']:.3f}; "
                         + "; ".join(f"τ = {tau:g}: IOI-only {c.get('IOI-only', 0)}, "
                                     f"anti-only {c.get('anti-only', 0)}, shared {c.get('shared', 0)}"
                                     for tau, c in counts.items()))
    print(markdown_table(pd.DataFrame(summary), "{:.3g}"))
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
