"""Measuring a trained toy model with the study's own code: baseline, every head's Δ on both toy tasks,
and its accuracy on held-out sequences."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel

from ioi_anti.measure.ablation import make_groups
from ioi_anti.measure.head_table import model_head_table
from ioi_anti.measure.sweep import ModelSweep, baseline_table
from ioi_anti.models.loading import LoadedModel
from ioi_anti.models.quantise import quantise_weights
from ioi_anti.params import Runtime, ToyMeasure, ToyModels
from ioi_anti.toy.language import ToyLanguage
from ioi_anti.toy.tasks import KIND_PROMPTS, TOY_TASKS, right_answers
from ioi_anti.toy.train import ToyRun, Trained, from_bytes, grid, loaded, partition_key

ANSWERS = {  # what a right answer is, per kind of prompt (top-1 over the whole vocabulary)
    "ioi": "the indirect object",
    "list": "an item of the category not yet listed",
    "copy": "the listed item to copy next",
}


def head_table(lm: LoadedModel, run: ToyRun, tokens: pd.DataFrame, measure: ToyMeasure, runtime: Runtime,
               seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The toy model's per-head table (as a pretrained model's, plus ``size``, ``mix``, ``seed``) and its
    baseline per prompt, measured by the sweep of :mod:`ioi_anti.measure.sweep` (exact ablation of every head,
    on the CPU whatever ``runtime.device`` says)."""
    runtime = runtime.model_copy(update={"device": "cpu"})
    baseline = baseline_table(lm, tokens, runtime.max_batch)
    roles = {task.name: task.ablation_roles for task in TOY_TASKS}
    sweep = ModelSweep(lm.spec, tokens, runtime, measure.ablation, seed, lm=lm, roles=roles)
    long = pd.concat([sweep.attribution_effects(), *(sweep.layer_effects(layer) for layer in range(lm.n_layers))],
                     ignore_index=True)
    table = model_head_table(long, baseline, list(roles), measure.n_boot, measure.ci, seed)
    facts = {"size": run.size.name, "mix": run.mix, "seed": run.seed, "ablation": measure.ablation}
    return table.assign(**facts), baseline.assign(**facts)


def accuracy(lm: LoadedModel, run: ToyRun, tokens: pd.DataFrame, max_batch: int) -> pd.DataFrame:
    """Top-1 accuracy over the whole vocabulary on the held-out prompts of each kind (see
    :data:`~ioi_anti.toy.tasks.KIND_PROMPTS`, :func:`~ioi_anti.toy.tasks.right_answers`), with the chance
    level of guessing uniformly among the vocabulary's tokens."""
    rows = []
    for kind, (task, role) in KIND_PROMPTS.items():
        prompts = tokens[(tokens["task"] == task) & (tokens["role"] == role)]
        answers = dict(zip(prompts["prompt_id"], right_answers(prompts, lm.tokenizer), strict=True))
        right = []
        for group in make_groups(prompts, lm.device, max_batch):
            with torch.no_grad():
                top = lm.bridge(group.input_ids)[:, -1].argmax(-1).tolist()
            right += [top_id in answers[p] for p, top_id in zip(group.prompt_ids, top, strict=True)]
        rows.append({"model": run.model_id, "size": run.size.name, "mix": run.mix, "seed": run.seed, "kind": kind,
                     "task": task, "role": role, "answer": ANSWERS[kind], "n_prompts": len(right),
                     "accuracy": float(np.mean(right)),
                     "chance": float(np.mean([len(a) for a in answers.values()])) / len(lm.tokenizer)})
    return pd.DataFrame(rows)


def _trained(trained: Mapping[str, Callable[[], bytes]], settings: ToyModels, run: ToyRun, seed: int) -> Trained:
    """The saved model of ``run`` (an error naming the command that trains it if it is missing)."""
    key = partition_key(settings, run, seed)
    if key not in trained:
        raise KeyError(f"Toy model {run.model_id} is not trained with these settings; run "
                       "`kedro run --pipelines toy_models`.")
    return from_bytes(trained[key](), run)


def measure_grid(trained: Mapping[str, Callable[[], bytes]], tokens: pd.DataFrame, settings: ToyModels,
                 runtime: Runtime, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every model of the grid measured like a pretrained one: the per-head table, the baseline per prompt,
    the accuracy on held-out prompts (with the step training stopped at and whether it converged), and the
    training curves (loss per step, validation accuracy per evaluation)."""
    tokenizer = ToyLanguage.from_settings(settings.language).tokenizer()
    tables, baselines, accuracies, curves = [], [], [], []
    for run in grid(settings.grid):
        model = _trained(trained, settings, run, seed)
        lm = loaded(run, model.model, tokenizer)
        table, baseline = head_table(lm, run, tokens, settings.measure, runtime, seed)
        tables.append(table)
        baselines.append(baseline)
        steps = int(model.curves["step"].max()) + 1
        accuracies.append(accuracy(lm, run, tokens, runtime.max_batch).assign(steps=steps, converged=model.converged))
        curves.append(model.curves.assign(model=run.model_id, size=run.size.name, mix=run.mix, seed=run.seed))
    return tuple(pd.concat(frames, ignore_index=True) for frames in (tables, baselines, accuracies, curves))


def measure_quantised(trained: Mapping[str, Callable[[], bytes]], tokens: pd.DataFrame, settings: ToyModels,
                      types: Sequence[str], models: Collection[str], runtime: Runtime,
                      seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The grid's ``models`` measured again with their float32 weights quantised to each GGUF type of ``types``
    (:func:`~ioi_anti.models.quantise.quantise_weights`): per-head tables and accuracies as
    :func:`measure_grid`'s, and the change of every weight tensor, each with ``quantised_to``."""
    tokenizer = ToyLanguage.from_settings(settings.language).tokenizer()
    runs = [run for run in grid(settings.grid) if run.model_id in models]
    tables, accuracies, tensors = [], [], []
    for run in tqdm(runs, desc="quantised toy models", unit="model"):
        model = _trained(trained, settings, run, seed).model
        for kind in types:
            copy = GPT2LMHeadModel(model.config)
            copy.load_state_dict(model.state_dict())
            changes = quantise_weights(copy, kind, seed)
            lm = loaded(run, copy, tokenizer)
            table, _baseline = head_table(lm, run, tokens, settings.measure, runtime, seed)
            tables.append(table.assign(quantised_to=kind))
            accuracies.append(accuracy(lm, run, tokens, runtime.max_batch).assign(quantised_to=kind))
            tensors.append(changes.assign(model=run.model_id, size=run.size.name, mix=run.mix, seed=run.seed,
                                          quantised_to=kind))
    if not tables:
        raise ValueError("No toy model to quantise: none of the grid's models learned what it was trained on.")
    return tuple(pd.concat(frames, ignore_index=True) for frames in (tables, accuracies, tensors))
