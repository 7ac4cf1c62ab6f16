"""Benchmark training toy models one at a time against training them together as one batched model.

For each toy size of ``toy_models.grid`` and the default batch size, on batches drawn from the toy
corpus at one λ, in one process: training steps of one ``GPT2LMHeadModel`` at a time on one padded batch
(as the toy pipeline trained before it grouped models), then :func:`~ioi_anti.toy.train.train_group` (a
:class:`~ioi_anti.toy.stacked.StackedGPT2`, a pass per kind of sequence) on groups of 1, 5 and 10
models; prints the time per model and step of each and its ratio to the first, as Markdown for
docs/performance.md.

Run: ``python benchmarks/bench_toy_training.py [--steps 40] [--mix 0.5] [--groups 1 5 10]``. Run it alone: two
torch processes on two cores slow each other down.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import GPT2LMHeadModel

from ioi_anti.params import ToySize, ToyTraining
from ioi_anti.report.markdown import markdown_table
from ioi_anti.run.validation import project_settings
from ioi_anti.toy.language import ToyLanguage
from ioi_anti.toy.tasks import toy_prompts
from ioi_anti.toy.train import Corpus, ToyRun, Validation, toy_config, train_group

ROOT = Path(__file__).resolve().parents[1]


def hf_seconds_per_step(size: ToySize, corpus: Corpus, vocab_size: int, training: ToyTraining, mix: float,
                        steps: int) -> float:
    """Seconds per step of one ``GPT2LMHeadModel`` trained alone on one batch padded to its longest sequence
    (how the pipeline trained toy models before it grouped them), after one warm-up step."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(toy_config(size, vocab_size)).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    rng = np.random.default_rng(0)
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        rows = np.concatenate(list(corpus.batch(rng, training.batch_size, mix).values()))
        width = int(corpus.lengths[rows].max())
        ids, mask = corpus.ids[rows][:, :width], corpus.trained[rows][:, : width - 1]
        losses = torch.nn.functional.cross_entropy(model(ids).logits[:, :-1].transpose(1, 2), ids[:, 1:],
                                                   reduction="none")
        optimiser.zero_grad()
        losses[mask].mean().backward()
        optimiser.step()
    return (time.perf_counter() - start) / steps


def group_seconds_per_model_step(runs: list[ToyRun], corpus: Corpus, validation: Validation, vocab_size: int,
                                 training: ToyTraining, required_share: float, steps: int) -> float:
    """Seconds per model and step of :func:`train_group` on ``runs`` (one evaluation, at the last step)."""
    fixed = training.model_copy(update={"steps": steps, "eval_every": steps, "stall_evaluations": steps})
    start = time.perf_counter()
    for _trained in train_group(runs, corpus, validation, fixed, vocab_size, required_share):
        pass
    return (time.perf_counter() - start) / steps / len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--mix", type=float, default=0.5)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 5, 10])
    args = parser.parse_args()
    settings = project_settings(ROOT / "conf").toy_models
    training = settings.training
    language = ToyLanguage.from_settings(settings.language)
    tokenizer = language.tokenizer()
    corpus = Corpus.generate(language, tokenizer.get_vocab(), 2000, 0)
    validation = Validation.from_prompts(toy_prompts(settings, 1)[1], tokenizer)
    rows = []
    for size in settings.grid.sizes:
        base = hf_seconds_per_step(size, corpus, len(tokenizer), training, args.mix, args.steps)
        rows.append({"size": size.name, "how": "one GPT2LMHeadModel at a time, one padded batch", "models": 1,
                     "ms per model and step": 1000 * base, "speed-up": 1.0})
        for m in args.groups:
            runs = [ToyRun(size, args.mix, seed) for seed in range(m)]
            per_model = group_seconds_per_model_step(runs, corpus, validation, len(tokenizer), training,
                                                     settings.required_share, args.steps)
            rows.append({"size": size.name, "how": "train_group: StackedGPT2, a pass per kind", "models": m,
                         "ms per model and step": 1000 * per_model, "speed-up": base / per_model})
    table = pd.DataFrame(rows)
    table["ms per model and step"] = table["ms per model and step"].map("{:.1f}".format)
    table["speed-up"] = table["speed-up"].map("{:.2f}x".format)
    print(f"{platform.platform()}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch "
          f"{training.batch_size}, λ = {args.mix:g}, {args.steps} steps each")
    print(markdown_table(table))


if __name__ == "__main__":
    main()
