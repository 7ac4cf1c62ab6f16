"""Nodes of the toy_models pipeline: prompts, training (resumable, one partition per model), measurement,
roles against the objective mix, figures and the report.

Their settings are typed (:mod:`ioi_anti.params`): Kedro instantiates ``params:toy_models`` as
:class:`~ioi_anti.params.ToyModels`, ``params:runtime`` as :class:`~ioi_anti.params.Runtime` and
``params:reporting`` as :class:`~ioi_anti.params.Reporting` before a node runs."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from matplotlib.figure import Figure

from ioi_anti.figures.style import FigureStyle
from ioi_anti.params import Reporting, Runtime, ToyModels
from ioi_anti.report.markdown import relative_link
from ioi_anti.report.registry import SavedFigure
from ioi_anti.toy import measure, roles, train
from ioi_anti.toy import plots as toy_plots
from ioi_anti.toy.report import toy_report
from ioi_anti.toy.tasks import toy_prompts


def make_toy_prompts(params: ToyModels, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both toy tasks' prompts (held-out combinations only) and their tokens in the language's tokenizer."""
    return toy_prompts(params, seed)


def train_toy_models(done: dict[str, Callable[[], bytes]], params: ToyModels,
                     seed: int) -> dict[str, Callable[[], bytes]]:
    """One partition per model of the grid not trained yet with these settings, each trained (with the other
    models of its size) when it is saved."""
    return train.training_jobs(done, params, seed)


def measure_toy_models(trained: dict[str, Callable[[], bytes]], tokens: pd.DataFrame, params: ToyModels,
                       runtime: Runtime, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                         pd.DataFrame]:
    """Every model of the grid measured like a pretrained one: per-head table, baseline, accuracy, curves."""
    return measure.measure_grid(trained, tokens, params, runtime, seed)


def summarise_toy_roles(per_head: pd.DataFrame, accuracy: pd.DataFrame, params: ToyModels,
                        seed: int) -> tuple[pd.DataFrame, ...]:
    """Whether each model learned each task (held-out accuracy), every head's category at τ (as
    ``head_categories`` of the real models, on the toy pair), each model's roles, the roles per size and mix
    over seeds, and the test of whether shared heads need both objectives."""
    gaps = roles.learned(accuracy, params)
    heads = roles.categorise_learned(per_head, gaps, params.tau)
    per_model = roles.model_roles(heads)
    summary = roles.over_seeds(per_model, params.measure.n_boot, seed, params.measure.ci)
    return gaps, heads, per_model, summary, roles.sharing_test(per_model, params, seed, params.measure.ci)


def plot_toy_roles(summary: pd.DataFrame, per_model: pd.DataFrame, accuracy: pd.DataFrame, params: ToyModels,
                   style: Reporting) -> Figure:
    """Roles against the objective mix, per size: accuracy, strong heads per task, shared share, r."""
    return toy_plots.roles_against_mix(summary, per_model, accuracy, params.learned_accuracy,
                                       FigureStyle.from_params(style))


def plot_toy_phase_space(heads: pd.DataFrame, params: ToyModels, style: Reporting) -> Figure:
    """The phase space of the first seed's models: a row per size, a panel per mix."""
    first = heads[heads["seed"] == min(params.grid.seeds)]
    return toy_plots.phase_space(first, params.tau, FigureStyle.from_params(style))


def plot_toy_training(losses: pd.DataFrame, style: Reporting) -> Figure:
    """Training loss of each kind of sequence against step, per size and mix (mean over seeds)."""
    return toy_plots.training_curves(losses, FigureStyle.from_params(style))


def write_toy_report(summary: pd.DataFrame, per_model: pd.DataFrame, accuracy: pd.DataFrame, gaps: pd.DataFrame,
                     test: pd.DataFrame, params: ToyModels, style: Reporting, **figures: SavedFigure) -> str:
    """The toy-models report: the question, the numbers and the answer in words, with its figures."""
    images = {name: relative_link(figure.path, style.output_dir) for name, figure in figures.items()}
    return toy_report(summary, per_model, accuracy, gaps, test, params, images)
