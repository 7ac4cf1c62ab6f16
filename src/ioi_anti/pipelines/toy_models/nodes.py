"""Nodes of the toy_models pipeline: prompts, training (resumable, one partition per model), measurement,
roles against the objective mix, figures and the report."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ioi_anti import plotting
from ioi_anti.datasets import SavedFigure
from ioi_anti.pipelines.reporting.nodes import relative_link
from ioi_anti.prompts import check_template_lengths, tokenise_prompts
from ioi_anti.toy import measure, roles, train
from ioi_anti.toy import plots as toy_plots
from ioi_anti.toy.language import ToyLanguage
from ioi_anti.toy.report import toy_report
from ioi_anti.toy.tasks import TOY_TASKS

logger = logging.getLogger(__name__)


def _fingerprint(params: dict[str, Any]) -> str:
    """What a trained model depends on besides its size, mix and seed: the language and the training."""
    settings = json.dumps({"language": params["language"], "training": params["training"]}, sort_keys=True)
    return "t" + hashlib.sha256(settings.encode()).hexdigest()[:11]


def _key(params: dict[str, Any], run: train.ToyRun) -> str:
    return f"{_fingerprint(params)}/{run.model_id}"


def make_toy_prompts(params: dict[str, Any], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both toy tasks' prompts (held-out combinations only) and their tokens in the language's tokenizer."""
    language = ToyLanguage.from_params(params["language"])
    tokenizer = language.tokenizer()
    prompts = pd.concat([task.prompts(params, {"toy": tokenizer}, seed)[0] for task in TOY_TASKS], ignore_index=True)
    tokens = tokenise_prompts(prompts, tokenizer, prepend_bos=True)
    for task in TOY_TASKS:
        check_template_lengths(tokens, task.name, task.ablation_roles, "toy")
    return prompts, tokens


def _intact(load: Callable[[], bytes], key: str) -> bool:
    try:
        train.from_bytes(load())
    except Exception as error:  # noqa: BLE001 - any unreadable file is retrained, whatever the reader raises
        logger.warning("Trained toy model %s is damaged (%s): it is trained again.", key, error)
        return False
    return True


def train_toy_models(done: dict[str, Callable[[], bytes]], params: dict[str, Any]) -> dict[str, Callable[[], bytes]]:
    """One partition per model of the grid not trained yet with these settings, each trained when it is
    saved (so an interrupted grid keeps every finished model, and a re-run trains only the rest)."""
    language = ToyLanguage.from_params(params["language"])
    tokenizer = language.tokenizer()
    todo = [run for run in train.grid(params["grid"])
            if _key(params, run) not in done or not _intact(done[_key(params, run)], _key(params, run))]
    total = len(train.grid(params["grid"]))
    if len(todo) < total:
        logger.info("Toy models: %d of %d already trained with these settings; training %d.", total - len(todo),
                    total, len(todo))

    def job(run: train.ToyRun, number: int) -> Callable[[], bytes]:
        def trained() -> bytes:
            logger.info("Training toy model %d of %d: %s.", number, len(todo), run.model_id)
            model, losses = train.train(run, language, tokenizer, params["training"])
            return train.to_bytes(model, losses)
        return trained

    todo.sort(key=lambda run: _key(params, run))  # the order the partitions are saved (and so trained) in
    return {_key(params, run): job(run, i + 1) for i, run in enumerate(todo)}


def measure_toy_models(trained: dict[str, Callable[[], bytes]], tokens: pd.DataFrame, params: dict[str, Any],
                       runtime: dict[str, Any], seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                                    pd.DataFrame]:
    """Every model of the grid measured like a pretrained one: the per-head table, the baseline per prompt,
    the accuracy on held-out prompts, and the training loss curves."""
    language = ToyLanguage.from_params(params["language"])
    tokenizer = language.tokenizer()
    tables, baselines, accuracies, losses = [], [], [], []
    for run in train.grid(params["grid"]):
        key = _key(params, run)
        if key not in trained:
            raise KeyError(f"Toy model {run.model_id} is not trained with these settings; run "
                           "`kedro run --pipeline toy_models`.")
        model, loss = train.from_bytes(trained[key]())
        lm = train.loaded(run, model, tokenizer)
        table, baseline = measure.head_table(lm, run, tokens, params["measure"], runtime, seed)
        tables.append(table)
        baselines.append(baseline)
        accuracies.append(measure.accuracy(lm, run, tokens, int(runtime["max_batch"])))
        losses.append(loss.assign(model=run.model_id, size=run.size, mix=run.mix, seed=run.seed))
    return tuple(pd.concat(frames, ignore_index=True) for frames in (tables, baselines, accuracies, losses))


def summarise_toy_roles(per_head: pd.DataFrame, baseline: pd.DataFrame, params: dict[str, Any],
                        seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Whether each model learned each task, every head's category at τ (as ``head_categories`` of the real
    models, on the toy pair), each model's roles, and the roles per size and mix over seeds."""
    gaps = roles.learned(baseline, int(params["measure"]["n_boot"]), seed)
    heads = roles.categorise_learned(per_head, gaps, float(params["tau"]))
    per_model = roles.model_roles(heads)
    return gaps, heads, per_model, roles.over_seeds(per_model)


def _style(params: dict[str, Any]) -> plotting.FigureStyle:
    return plotting.FigureStyle(params["fig_width_in"], params["font_size"], params["panel_height_in"])


def plot_toy_roles(summary: pd.DataFrame, accuracy: pd.DataFrame, style: dict[str, Any]) -> Figure:
    """Roles against the objective mix, per size: accuracy, strong heads per task, shared share, r."""
    return toy_plots.roles_against_mix(summary, accuracy, _style(style))


def plot_toy_phase_space(heads: pd.DataFrame, params: dict[str, Any], style: dict[str, Any]) -> Figure:
    """The phase space of the first seed's models: a row per size, a panel per mix."""
    first = heads[heads["seed"] == min(params["grid"]["seeds"])]
    return toy_plots.phase_space(first, float(params["tau"]), _style(style))


def plot_toy_training(losses: pd.DataFrame, style: dict[str, Any]) -> Figure:
    """Training loss of each kind of sequence against step, per size and mix (mean over seeds)."""
    return toy_plots.training_curves(losses, _style(style))


def write_toy_report(summary: pd.DataFrame, per_model: pd.DataFrame, accuracy: pd.DataFrame, gaps: pd.DataFrame,
                     params: dict[str, Any], style: dict[str, Any], **figures: SavedFigure) -> str:
    """The toy-models report: the question, the numbers and the answer in words, with its figures."""
    images = {name: relative_link(figure.path, str(style["output_dir"])) for name, figure in figures.items()}
    return toy_report(summary, per_model, accuracy, gaps, params, images)
