"""Nodes of the hero_heads pipeline."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from matplotlib.figure import Figure

from ioi_anti.analysis.categories import run_pair
from ioi_anti.figures import hero as hero_plots
from ioi_anti.figures.style import FigureStyle
from ioi_anti.hero import routes
from ioi_anti.hero.study import select_heroes, study_heroes
from ioi_anti.params import HeadAblation, HeroHeads, Registry, Reporting, Runtime
from ioi_anti.report.registry import decomposition_key


def select_hero_heads(per_head: pd.DataFrame, tau: float, params: HeroHeads, tasks: list[str],
                      pair: list[str]) -> pd.DataFrame:
    """Per model: the strongest robust heads of each category of the run's pair, plus the named ones."""
    return select_heroes(per_head, tau, params, tasks, pair)


def study_hero_heads(
    heroes: pd.DataFrame,
    per_head: pd.DataFrame,
    tokenised: dict[str, Callable[[], pd.DataFrame]],
    models: list[str],
    registry: Registry,
    runtime: Runtime,
    ablation_params: HeadAblation,
    tau: float,
    params: HeroHeads,
    seed: int,
    tasks: list[str],
    pair: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Dose response, top-k ablation, path patching, attention and decomposition of every hero head."""
    return study_heroes(heroes, per_head, tokenised, models, registry, runtime, ablation_params, tau, params, seed,
                        tasks, pair)


def summarise_hero_routes(decomposition: pd.DataFrame, heroes: pd.DataFrame, tau: float,
                          params: HeroHeads, tasks: list[str], pair: list[str]) -> pd.DataFrame:
    """Verdict per hero and task (acts directly / routes through ... / mixed) with each route's share."""
    return routes.route_table(decomposition, heroes, tau, params.verdict, run_pair(tasks, pair))


def plot_dose_response(dose: pd.DataFrame, heroes: pd.DataFrame, tasks: list[str], pair: list[str],
                       params: Reporting) -> Figure:
    """Dose-response curves of every hero head."""
    return hero_plots.dose_response(dose, heroes, FigureStyle.from_params(params), run_pair(tasks, pair))


def plot_topk(topk: pd.DataFrame, tasks: list[str], pair: list[str], params: Reporting) -> Figure:
    """Cumulative top-k ablation curves per model and category."""
    return hero_plots.topk(topk, FigureStyle.from_params(params), run_pair(tasks, pair))


def plot_paths(paths: pd.DataFrame, heroes: pd.DataFrame, tasks: list[str], pair: list[str],
               params: Reporting) -> Figure:
    """Path-patching bars of every hero head."""
    return hero_plots.paths(paths, heroes, FigureStyle.from_params(params), pair=run_pair(tasks, pair))


def plot_decomposition(decomposition: pd.DataFrame, hero_routes: pd.DataFrame, heroes: pd.DataFrame,
                       tasks: list[str], pair: list[str], params: Reporting) -> dict[str, Figure]:
    """One figure per model: each hero's total Δ as the sum of its routes plus the remainder, and by layer."""
    style, run = FigureStyle.from_params(params), run_pair(tasks, pair)
    return {decomposition_key(str(model)): hero_plots.decomposition(rows, hero_routes, heroes, style, run)
            for model, rows in decomposition.groupby("model", sort=False)}


def plot_attention(attention: pd.DataFrame, heroes: pd.DataFrame, tasks: list[str], pair: list[str],
                   params: Reporting) -> Figure:
    """Attention summaries of every hero head."""
    return hero_plots.attention(attention, heroes, FigureStyle.from_params(params), run_pair(tasks, pair))
