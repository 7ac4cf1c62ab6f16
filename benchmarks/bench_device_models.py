"""Per-model head-sweep cost of the paper's nine architectures on this machine's device (a GPU box).

The paper's models load from the Hugging Face Hub, which a benchmark machine may not reach; their
*cost* does not depend on the weights, so each architecture is built with random weights from its
published shape (layers, heads, widths, vocabulary) and swept on real prompts (tokenised with the
embedded SmolLM2 tokenizer, whose ids fit every vocabulary). Per model it measures loading onto the
device, the clean passes plus attribution patching, and the exact sweep of three layers (first,
middle, last); a layer's exact sweep replays the blocks from that layer on, so its time is close to
linear in the number of replayed blocks, and the whole sweep is extrapolated from the three by a
least-squares line (``--full`` measures every layer of one model to check that). These per-model
times give the expected speed-up of a multi-GPU Dask cluster (docs/performance.md).

It also checks the fast sweep against the naive one-forward-per-head reference at every layer of
the smaller architectures on the device, and, with ``--cluster``, runs a layer on a local Dask
cluster (one worker per GPU) and compares it bit for bit with the same layer computed in process.

Run: ``python benchmarks/bench_device_models.py [--tokens T.parquet] [--tokenizer DIR] [--full pythia-160m]
[--cluster]``. ``--tokens`` defaults to the SmolLM2 partition a data_generation run writes (for the
paper's counts: ``kedro run --pipelines data_generation --params "models=[smollm2-135m],
data_generation.ioi.n_prompts=240,data_generation.anti.n_prompts=216"`` and the pool sizes of
conf/paper); ``--tokenizer`` to the embedded SmolLM2 tokenizer (a ``save_pretrained`` folder of it
serves a machine without the model package). Prints Markdown for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPTNeoConfig, GPTNeoXConfig, OPTConfig

from ioi_anti.measure.ablation import ablated_layer_metrics, clean_pass, reference_layer_metrics
from ioi_anti.measure.sweep import ModelSweep
from ioi_anti.models.loading import LoadedModel, load_tokenizer, resolve_device, wrap_model
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import Runtime
from ioi_anti.run.validation import project_settings
from ioi_anti.tasks import PAIR as TASKS

PROJECT = Path(__file__).resolve().parents[1]
TOKENS = PROJECT / "data" / "05_model_input" / "tokenised_prompts" / "smollm2-135m.parquet"
GPT2_VOCAB, NEOX_VOCAB = 50257, 50304


def _pythia(layers: int, heads: int, width: int) -> GPTNeoXConfig:
    return GPTNeoXConfig(num_hidden_layers=layers, num_attention_heads=heads, hidden_size=width,
                         intermediate_size=4 * width, rotary_pct=0.25, vocab_size=NEOX_VOCAB,
                         max_position_embeddings=2048, use_parallel_residual=True)


# The published shapes of the paper's nine models (their Hub configs).
ARCHITECTURES: dict[str, tuple[str, Any]] = {
    "pythia-70m": ("pythia", _pythia(6, 8, 512)),
    "gpt2": ("gpt2", GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=GPT2_VOCAB)),
    "gpt-neo-125m": ("gpt-neo", GPTNeoConfig(num_layers=12, num_heads=12, hidden_size=768, vocab_size=GPT2_VOCAB,
                                             attention_types=[[["global", "local"], 6]], window_size=256,
                                             max_position_embeddings=2048)),
    "opt-125m": ("opt", OPTConfig(num_hidden_layers=12, num_attention_heads=12, hidden_size=768, ffn_dim=3072,
                                  word_embed_proj_dim=768, vocab_size=50272, max_position_embeddings=2048)),
    "pythia-160m": ("pythia", _pythia(12, 12, 768)),
    "gpt2-medium": ("gpt2", GPT2Config(n_layer=24, n_head=16, n_embd=1024, vocab_size=GPT2_VOCAB)),
    "pythia-410m": ("pythia", _pythia(24, 16, 1024)),
    "gpt2-large": ("gpt2", GPT2Config(n_layer=36, n_head=20, n_embd=1280, vocab_size=GPT2_VOCAB)),
    "pythia-1b": ("pythia", _pythia(16, 8, 2048)),
}
CHECKED = ("pythia-70m", "gpt2", "gpt-neo-125m", "opt-125m")  # fast vs naive at every layer
# The benchmark's own runtime (its models are given loaded, so keep_loaded_gb does not apply), in process.
RUNTIME = Runtime(device="auto", dtype="float32", tf32=False, max_batch=64, max_rows=512, keep_loaded_gb=4.0,
                  cluster=None, workers=2)


def random_model(name: str, tokenizer: Any, device: torch.device) -> LoadedModel:
    """The architecture ``name`` with random weights (seed 0), wrapped by the project's loader."""
    family, config = ARCHITECTURES[name]
    torch.manual_seed(0)
    hf_model = AutoModelForCausalLM.from_config(config)
    spec = ModelSpec(model_id=name, family=family, source="hub", hf_name=f"random-{name}", prepend_bos=False,
                     quantisation="none", licence="random weights")
    return wrap_model(spec, hf_model, tokenizer, device)


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def measure(lm: LoadedModel, tokens: pd.DataFrame, layers: list[int]) -> dict[str, Any]:
    """Seconds for the clean passes plus attribution, and for the exact sweep of each of ``layers``."""
    sweep = ModelSweep(lm.spec, tokens, RUNTIME, "mean", 0, lm=lm)
    start = _sync(lm.device)
    sweep.attribution_effects()
    attribution = _sync(lm.device) - start
    per_layer = {}
    for layer in layers:
        start = _sync(lm.device)
        sweep.layer_effects(layer)
        per_layer[layer] = _sync(lm.device) - start
    return {"attribution": attribution, "per_layer": per_layer}


def extrapolate(per_layer: dict[int, float], n_layers: int) -> float:
    """Whole-sweep seconds from a least-squares line of layer time against replayed blocks."""
    blocks = np.array([n_layers - layer for layer in per_layer])
    slope, intercept = np.polyfit(blocks, np.array(list(per_layer.values())), 1)
    return float(sum(intercept + slope * (n_layers - layer) for layer in range(n_layers)))


def check_against_naive(lm: LoadedModel, tokens: pd.DataFrame) -> float:
    """Largest |fast - naive| over every layer, both tasks, the first 4 prompts of each task."""
    from ioi_anti.measure.ablation import AblationValues, make_groups
    from ioi_anti.tasks import load_task

    worst = 0.0
    for task in TASKS:
        rows = tokens[tokens["task"] == task]
        pool = make_groups(rows[rows["role"].isin(load_task(task).ablation_roles)], lm.device, 64)
        values = AblationValues("mean", lm, pool, 0)
        group = make_groups(rows[rows["role"] == "clean"].head(4), lm.device, 4)[0]
        clean = clean_pass(lm, group, keep_resid=True, keep_z=False)
        v = values.for_group(group)
        for layer in range(lm.n_layers):
            fast = ablated_layer_metrics(lm, clean, v[layer], layer)
            naive = reference_layer_metrics(lm, group, v[layer], layer)
            worst = max(worst, float((fast - naive).abs().max()))
    return worst


def tokenizer_from(folder: str | None) -> Any:
    """A saved tokenizer, or the embedded SmolLM2's (read from its package)."""
    if folder:
        return AutoTokenizer.from_pretrained(folder)
    registry = project_settings(PROJECT / "conf").model_registry
    return load_tokenizer(ModelSpec.from_registry("smollm2-135m", registry))


def cluster_layer(name: str, tokenizer_dir: str | None, tokens: pd.DataFrame, layer: int) -> tuple[str, pd.DataFrame]:
    """On a worker: its visible GPUs, and one layer's exact effects of the random model ``name``."""
    device = resolve_device("auto")
    lm = random_model(name, tokenizer_from(tokenizer_dir), device)
    sweep = ModelSweep(lm.spec, tokens, RUNTIME, "mean", 0, lm=lm)
    return f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')} -> {device}", sweep.layer_effects(layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default=str(TOKENS))
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--full", default=None, help="also sweep every layer of this model")
    parser.add_argument("--cluster", action="store_true")
    args = parser.parse_args()
    device = resolve_device("auto")
    if not Path(args.tokens).exists():
        raise SystemExit(f"No tokenised prompts at {args.tokens}: run the data_generation pipeline first (see --help).")
    tokens = pd.read_parquet(args.tokens)
    tokenizer = tokenizer_from(args.tokenizer)
    clean = tokens[tokens["role"] == "clean"]
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    print(f"Device: {device} ({name}), torch {torch.__version__}, {platform.platform()}; "
          f"{(clean['task'] == 'ioi').sum()} IOI + {(clean['task'] == 'anti').sum()} anti clean prompts, "
          f"{len(tokens)} prompts in all; mean ablation, float32, max_batch {RUNTIME.max_batch}, "
          f"max_rows {RUNTIME.max_rows}.\n", flush=True)
    print("| model | layers × heads | load (s) | clean passes + attribution (s) | exact sweep (s, from 3 layers) "
          "| per model (s) | peak memory (GB) | fast vs naive, every layer |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for model in args.models:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = _sync(device)
        lm = random_model(model, tokenizer, device)
        load = _sync(device) - start
        n = lm.n_layers
        result = measure(lm, tokens, sorted({0, n // 2, n - 1}))
        sweep = extrapolate(result["per_layer"], n)
        peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")
        check = f"{check_against_naive(lm, tokens):.1e}" if model in CHECKED else "—"
        print(f"| {model} | {n} × {lm.n_heads} | {load:.1f} | {result['attribution']:.1f} | {sweep:.1f} | "
              f"{load + result['attribution'] + sweep:.1f} | {peak:.1f} | {check} |", flush=True)
        if model == args.full:
            full = measure(lm, tokens, list(range(n)))
            print(f"\n{model}, every layer measured: exact sweep {sum(full['per_layer'].values()):.1f} s "
                  f"(extrapolated from 3 layers: {sweep:.1f} s)\n", flush=True)
        del lm
    if args.cluster:
        from ioi_anti.execution import Job, client_for, close, run_jobs

        runtime = RUNTIME.model_copy(update={"cluster": "local"})
        client_for(runtime)
        model, layer = "gpt2", 5
        results = dict(run_jobs({"gpt2/layer": Job(model, cluster_layer, (model, args.tokenizer, tokens, layer))},
                                runtime, "cluster check").arrivals())
        where, remote = results["gpt2/layer"]
        close()
        local = cluster_layer(model, args.tokenizer, tokens, layer)[1]
        same = remote.equals(local)
        print(f"\nDask local cluster: worker saw {where}; layer {layer} of {model} on the worker equals the "
              f"in-process layer bit for bit: {same} (largest |difference| "
              f"{float((remote['effect'] - local['effect']).abs().max()):.1e}).", flush=True)


if __name__ == "__main__":
    main()
