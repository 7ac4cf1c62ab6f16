"""Node functions of the reporting pipeline: tables in, Figures / Markdown out (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure

from ioi_anti.analysis.categories import default_tau_rows, run_pair
from ioi_anti.figures import interactive
from ioi_anti.figures import study as study_figures
from ioi_anti.figures import tasks as task_plots
from ioi_anti.figures.style import FigureStyle, model_order
from ioi_anti.figures.training import final_checkpoints, series, training_dynamics
from ioi_anti.params import Reporting
from ioi_anti.report.markdown import data_uri, html_report, relative_link
from ioi_anti.report.published import audit_words, side_by_side_words
from ioi_anti.report.registry import DECOMPOSITION_DIR, LAYER_HISTS_DIR, TRAINING_DIR, SavedFigure, layer_hist_key
from ioi_anti.report.sections import build_report
from ioi_anti.tasks import load_tasks

CORR_TABLE_COLUMNS = (
    "model", "family", "tuning", "quantisation", "n_params", "n_layers", "n_heads", "task_x", "task_y",
    "pearson", "pearson_low", "pearson_high",
    "spearman", "spearman_low", "spearman_high", "n_boot", "level", "ablation", "gap_ok",
)


def corr_vs_scale_table(correlations: pd.DataFrame) -> pd.DataFrame:
    """The numbers behind the correlation-vs-scale figure, by family and size."""
    order = {model: i for i, model in enumerate(model_order(correlations))}
    ordered = correlations.sort_values("model", key=lambda s: s.map(order))
    return ordered[list(CORR_TABLE_COLUMNS)].reset_index(drop=True)


def plot_corr_vs_scale(correlations: pd.DataFrame, tasks: list[str], pair: list[str],
                       params: Reporting) -> Figure:
    """Correlation of the pair's Δ against parameter count, per family (last checkpoint of each model)."""
    style = FigureStyle.from_params(params)
    return study_figures.corr_vs_scale_cross_family(final_checkpoints(correlations), style, run_pair(tasks, pair))


def plot_strong_head_scaling(strong_head_counts: pd.DataFrame, tasks: list[str], pair: list[str],
                             params: Reporting) -> Figure:
    """Strong-head counts by category against parameter count, at the default τ (last checkpoints)."""
    counts, tau = default_tau_rows(strong_head_counts)
    style = FigureStyle.from_params(params)
    return study_figures.strong_head_scaling(final_checkpoints(counts), tau, style, run_pair(tasks, pair))


def plot_training_dynamics(correlations: pd.DataFrame, strong_head_counts: pd.DataFrame,
                           head_categories: pd.DataFrame, hero_heads: pd.DataFrame, tasks: list[str],
                           pair: list[str], params: Reporting) -> dict[str, Figure]:
    """Roles across training steps, when the run holds a series of checkpoints (else nothing)."""
    if not series(correlations):
        return {}
    counts, tau = default_tau_rows(strong_head_counts)
    heads, _tau = default_tau_rows(head_categories)
    style = FigureStyle.from_params(params)
    return {"training_dynamics": training_dynamics(correlations, counts, heads, hero_heads, tau, style,
                                                   run_pair(tasks, pair))}


def plot_all_heads_phase_space(head_categories: pd.DataFrame, tasks: list[str], pair: list[str],
                               params: Reporting) -> Figure:
    """The pair's Δ (Δ_IOI vs Δ_anti by default) of every head, at the default τ."""
    heads, tau = default_tau_rows(head_categories)
    return study_figures.all_heads_phase_space(heads, tau, FigureStyle.from_params(params), run_pair(tasks, pair))


def plot_family_grid(head_categories: pd.DataFrame, tasks: list[str], pair: list[str],
                     params: Reporting) -> Figure:
    """Per-model phase-space panels grouped by family, at the default τ."""
    heads, tau = default_tau_rows(head_categories)
    return study_figures.family_grid(heads, tau, FigureStyle.from_params(params), run_pair(tasks, pair))


def plot_layer_hists(layer_counts: pd.DataFrame, tasks: list[str], pair: list[str],
                     params: Reporting) -> dict[str, Figure]:
    """One stacked per-layer category histogram per model, keyed ``layer_hist_<model>``."""
    counts, tau = default_tau_rows(layer_counts)
    style, run = FigureStyle.from_params(params), run_pair(tasks, pair)
    return {
        layer_hist_key(str(model)): study_figures.layer_hist(rows, tau, style, run)
        for model, rows in counts.groupby("model", sort=True)
    }


def plot_task_roles(signature_counts: pd.DataFrame, task_correlations: pd.DataFrame, tasks: list[str],
                    params: Reporting) -> Figure:
    """Per model: strong heads per role signature and the Δ correlations between the run's tasks."""
    counts, tau = default_tau_rows(signature_counts)
    run = load_tasks(tasks)
    return task_plots.task_roles(counts, task_correlations, tau, {t.name: t.colour for t in run},
                                 {t.name: t.label for t in run}, FigureStyle.from_params(params))


def plot_interactive_phase_space(head_categories: pd.DataFrame, tasks: list[str], pair: list[str]) -> go.Figure:
    """The phase space of every head as an interactive Plotly figure at the default τ, opening on the run's
    pair, with a menu for every other pair of the run's tasks."""
    heads, tau = default_tau_rows(head_categories)
    run = run_pair(tasks, pair)
    return interactive.phase_space(heads, tau, interactive.all_pairs(load_tasks(tasks), run))


def write_report(
    baseline: pd.DataFrame,
    run_metadata: dict[str, Any],
    head_categories: pd.DataFrame,
    strong_head_counts: pd.DataFrame,
    correlations: pd.DataFrame,
    attribution_agreement: pd.DataFrame,
    hero_heads: pd.DataFrame,
    hero_paths: pd.DataFrame,
    hero_attention: pd.DataFrame,
    hero_routes: pd.DataFrame,
    interactive_phase_space: go.Figure,
    layer_hists: dict[str, Callable[[], SavedFigure]],
    training_plots: dict[str, Callable[[], SavedFigure]],
    hero_decomposition_plots: dict[str, Callable[[], SavedFigure]],
    signature_counts: pd.DataFrame,
    task_correlations: pd.DataFrame,
    published_audit: pd.DataFrame,
    published_comparison: pd.DataFrame,
    published_hero_comparison: pd.DataFrame,
    tasks: list[str],
    pair: list[str],
    params: Reporting,
    **figures: SavedFigure,
) -> tuple[str, str]:
    """The report of the run, hero-head case studies, the run beside the published results (for the
    models the study published) and the audit of the published tables included: Markdown whose images
    link the saved figures, and one self-contained HTML page with every figure embedded."""
    saved = dict(figures) | {f"{LAYER_HISTS_DIR}/{key}": load() for key, load in layer_hists.items()}
    saved |= {f"{TRAINING_DIR}/{key}": load() for key, load in training_plots.items()}
    saved |= {f"{DECOMPOSITION_DIR}/{key}": load() for key, load in hero_decomposition_plots.items()}
    output_dir = params.output_dir
    tables = (baseline, run_metadata, head_categories, strong_head_counts, correlations, attribution_agreement,
              output_dir, (hero_heads, hero_paths, hero_attention, hero_routes))
    roles, run = (signature_counts, task_correlations), run_pair(tasks, pair)
    tau = default_tau_rows(head_categories)[1]
    published = (side_by_side_words(published_comparison, published_hero_comparison, run_metadata, run, tau),
                 audit_words(published_audit))
    markdown = build_report(*tables, images={k: relative_link(f.path, output_dir) for k, f in saved.items()},
                            roles=roles, pair=run, published=published)
    embedded = build_report(*tables, images={k: data_uri(f) for k, f in saved.items()}, roles=roles, pair=run,
                            published=published)
    page = interactive_phase_space.to_html(full_html=False, include_plotlyjs=True, default_width="100%")
    return markdown, html_report(embedded, page)
