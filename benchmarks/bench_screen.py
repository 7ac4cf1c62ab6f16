"""Benchmark screening (``head_ablation.mode: screen``) against the exact sweep on the embedded models.

For each model, in one process and on the same prompts (the default run's): the exact sweep of
every head, then a screening sweep (attribution patching of every head, then the exact sweep of the
heads it selects). Prints, per model, both wall times and their ratio, how many heads screening
measured exactly, whether its strong heads at each τ are exactly the exact sweep's, and how well
attribution agrees with the exact Δ. Timings include each sweep's own clean passes.

Run: ``python benchmarks/bench_screen.py [--models smollm2-135m gemma3-270m]``; prints a Markdown
block for docs/performance.md. Run it alone: two torch processes on two cores slow each other down.

For a model whose exact sweep takes most of an hour (Qwen2.5-Coder-1.5B on 2 cores),
``--layers 0 14 27`` replays those layers only, in both sweeps, and extrapolates each sweep's replay
time to every layer by the blocks each layer's replay runs (N - L for layer L); the clean passes and
the attribution pass are timed in full and counted once. The screen's extrapolation assumes the
sampled layers select a typical share of heads. Strong heads are compared on the sampled layers. The
table says when times are extrapolated.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import pearsonr, spearmanr

from ioi_anti.measure.sweep import ModelSweep, Screen, baseline_table, heads_in_layer, task_gaps
from ioi_anti.models.loading import load_model, load_tokenizer
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import DataGeneration
from ioi_anti.run.validation import project_settings
from ioi_anti.tasks import PAIR as TASKS
from ioi_anti.tasks import make_task_prompts
from ioi_anti.tasks import prompts as P

ROOT = Path(__file__).resolve().parents[1]


def _deltas(long: pd.DataFrame, gaps: dict[str, float]) -> pd.DataFrame:
    """Δ per (layer, head) and task from per-prompt effects."""
    mean = long.groupby(["task", "layer", "head"])["effect"].mean().unstack("task")
    return mean / pd.Series(gaps)


def default_prompts(specs: list[ModelSpec], data: DataGeneration) -> pd.DataFrame:
    """The default run's IOI and anti-repetition prompts (its prompt seed ``data.seed``), over the word lists
    every model tokenises alike."""
    return make_task_prompts(TASKS, data, {s.model_id: load_tokenizer(s) for s in specs}, data.seed)[0]


def replay_share(n_layers: int, layers: list[int]) -> float:
    """Factor from the replay time of ``layers`` to that of every layer: a layer-L replay runs N - L blocks."""
    return sum(n_layers - layer for layer in range(n_layers)) / sum(n_layers - layer for layer in layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="model ids (default: the run's `models`)")
    parser.add_argument("--layers", nargs="+", type=int, default=None,
                        help="replay these layers only, and extrapolate both sweeps' times to every layer")
    args = parser.parse_args()
    settings = project_settings(ROOT / "conf")
    runtime = settings.runtime.model_copy(update={"device": "cpu"})
    data, taus, rule = settings.data_generation, settings.categorisation.taus, settings.head_ablation.screen
    screen = Screen(tau_min=min(taus), margin=rule.margin, top_k=rule.top_k)
    specs = [ModelSpec.from_registry(m, settings.model_registry) for m in args.models or settings.models]
    table = default_prompts(specs, data)
    n = {task: data.section(task)["n_prompts"] for task in TASKS}

    print(f"Machine: {platform.platform()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"default prompts ({n['ioi']} IOI + {n['anti']} anti), mean ablation, "
          f"screen rule: |estimate| >= {screen.tau_min} - {screen.margin} or top {screen.top_k} per task.\n")
    print("| model | heads | exact sweep (s) | screen (s) | screen / exact | measured exactly (IOI / anti) | "
          + " | ".join(f"strong heads at τ = {t:g} identical" for t in taus) + " | Spearman IOI / anti |")
    print("|---|---|---|---|---|---|" + "---|" * len(taus) + "---|")
    for spec in specs:
        lm = load_model(spec, "cpu", "float32")
        tokens = P.tokenise_prompts(table, lm.tokenizer, spec.prepend_bos)
        base_table = baseline_table(lm, tokens, runtime.max_batch)
        gaps = task_gaps(base_table)

        layers = list(range(lm.n_layers)) if args.layers is None else args.layers
        share = replay_share(lm.n_layers, layers)
        start = time.perf_counter()
        exact_sweep = ModelSweep(spec, tokens, runtime, "mean", settings.seed)
        _ = exact_sweep.states  # clean passes and ablation values: once per sweep, whatever the layers
        states_time = time.perf_counter() - start
        exact_long = pd.concat([exact_sweep.layer_effects(layer) for layer in layers])
        exact_time = states_time + (time.perf_counter() - start - states_time) * share
        exact_sweep.close()

        start = time.perf_counter()
        screen_sweep = ModelSweep(spec, tokens, runtime, "mean", settings.seed)
        selected = screen_sweep.selected_heads(gaps, screen)
        fixed_time = time.perf_counter() - start
        screen_long = pd.concat([screen_sweep.layer_effects(layer, heads_in_layer(selected, layer))
                                 for layer in layers])
        screen_time = fixed_time + (time.perf_counter() - start - fixed_time) * share
        estimates = _deltas(screen_sweep.attribution, gaps)
        screen_sweep.close()
        estimates = estimates[estimates.index.get_level_values("layer").isin(layers)]
        selected = {task: [h for h in heads if h[0] in layers] for task, heads in selected.items()}

        exact, screened = _deltas(exact_long, gaps), _deltas(screen_long, gaps)
        screened = screened.reindex(exact.index).fillna(estimates)
        same = []
        for tau in taus:
            strong = {task: set(exact.index[exact[task].abs() >= tau]) for task in TASKS}
            found = {task: set(screened.index[screened[task].abs() >= tau]) for task in TASKS}
            same.append("yes" if strong == found else f"no ({sum(len(strong[t] ^ found[t]) for t in TASKS)} differ)")
        rho = [spearmanr(exact[t], estimates[t]).statistic for t in TASKS]
        r = [pearsonr(exact[t], estimates[t]).statistic for t in TASKS]
        sampled = "" if args.layers is None else f" (layers {', '.join(map(str, layers))} replayed, extrapolated)"
        print(f"| {spec.model_id} | {len(exact)} | {exact_time:.1f}{sampled} | {screen_time:.1f}{sampled} | "
              f"{screen_time / exact_time:.2f} | {len(selected['ioi'])} / {len(selected['anti'])} | " + " | ".join(same)
              + f" | {rho[0]:.2f} / {rho[1]:.2f} (Pearson {r[0]:.2f} / {r[1]:.2f}) |")
        for task, heads in selected.items():
            measured = pd.MultiIndex.from_tuples(heads)
            np.testing.assert_allclose(screened.loc[measured, task], exact.loc[measured, task], atol=1e-6)


if __name__ == "__main__":
    main()
