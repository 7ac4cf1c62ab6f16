"""Where attribution patching fails: how much of a head's exact effect goes through the attention
patterns of later layers.

For each head named, on the default run's prompts: the exact Δ (one full forward per prompt group
with the head ablated), the Δ with every later layer's attention pattern frozen at its clean value
(so the ablation reaches the metric only through values, MLPs and the residual stream), the Δ with
the patterns of the next three layers frozen only, and the saved attribution estimate. A head whose
Δ vanishes when patterns are frozen acts through the queries and keys of later heads, where a
saturated softmax makes a first-order estimate small or of the wrong sign (AtP*, Kramár et al. 2024).

Run after a default ``kedro run``:
``python benchmarks/attention_paths.py smollm2-135m L16H0 L17H4`` (prints a Markdown table).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ioi_anti.hero.effects import parse_head
from ioi_anti.measure.ablation import PromptGroup, z_hook_name
from ioi_anti.measure.metrics import task_metric
from ioi_anti.measure.sweep import ModelSweep
from ioi_anti.models.loading import LoadedModel
from ioi_anti.models.spec import ModelSpec
from ioi_anti.run.validation import project_settings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def _metric(lm: LoadedModel, group: PromptGroup, hooks: list[tuple[str, Any]]) -> Tensor:
    with torch.no_grad():
        logits = lm.bridge.run_with_hooks(group.input_ids, fwd_hooks=hooks, use_cache=False, logits_to_keep=1)
    return task_metric(logits[:, -1].gather(-1, group.tokens), group.weights)


def head_deltas(sweep: ModelSweep, layer: int, head: int, gaps: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per task: Δ exact, with all later patterns frozen, with the next three layers' patterns frozen."""
    lm, out = sweep.lm, {}
    frozen = {"exact": range(0), "frozen": range(layer + 1, lm.n_layers),
              "frozen_next_3": range(layer + 1, min(layer + 4, lm.n_layers))}
    for state in sweep.states:
        sums = dict.fromkeys(frozen, 0.0)
        count = 0
        for clean, values in zip(state.clean, state.values, strict=True):
            store: dict[str, Tensor] = {}

            def save(pattern: Tensor, hook: Any, store: dict[str, Tensor] = store) -> None:
                store[hook.name] = pattern.detach().clone()

            def restore(pattern: Tensor, hook: Any, store: dict[str, Tensor] = store) -> Tensor:
                return store[hook.name]

            def ablate(z: Tensor, hook: Any, values: Tensor = values) -> Tensor:
                z = z.clone()
                z[:, :, head] = values[layer][:, :, head]
                return z

            base = _metric(lm, clean.group, [(_pattern(k), save) for k in range(lm.n_layers)])
            for name, layers in frozen.items():
                hooks = [(z_hook_name(layer), ablate)] + [(_pattern(k), restore) for k in layers]
                sums[name] += float((_metric(lm, clean.group, hooks) - base).sum())
            count += clean.group.size
        out[state.task] = {name: total / count / gaps[state.task] for name, total in sums.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("heads", nargs="+", help="heads as L<layer>H<head>")
    args = parser.parse_args()
    settings = project_settings(ROOT / "conf")
    spec = ModelSpec.from_registry(args.model, settings.model_registry)
    tokens = pd.read_parquet(DATA / "05_model_input" / "tokenised_prompts" / f"{args.model}.parquet")
    per_head = pd.read_parquet(sorted(DATA.glob("07_model_output/per_head.parquet/*/per_head.parquet"))[-1])
    per_head = per_head[per_head["model"] == args.model].set_index(["layer", "head"])
    if per_head.empty:
        raise ValueError(f"No per-head rows of {args.model} in the latest per_head table: run `kedro run` first.")
    gaps = {task: float(per_head[f"gap_{task}"].iloc[0]) for task in ("ioi", "anti")}
    sweep = ModelSweep(spec, tokens, settings.runtime.model_copy(update={"device": "cpu"}), "mean", settings.seed)
    print(f"{args.model}, default prompts, mean ablation; Δ in units of the task gap.\n")
    print("| head | task | exact Δ | later patterns frozen | next 3 layers' patterns frozen | attribution |\n"
          "|---|---|---|---|---|---|")
    for label in args.heads:
        layer, head = parse_head(label)
        for task, deltas in head_deltas(sweep, layer, head, gaps).items():
            print(f"| L{layer}H{head} | {task} | {deltas['exact']:+.3f} | {deltas['frozen']:+.3f} | "
                  f"{deltas['frozen_next_3']:+.3f} | {per_head.loc[(layer, head), f'attr_delta_{task}']:+.3f} |")


if __name__ == "__main__":
    main()
