"""The interactive phase space (Plotly): every head of every model, hover for its numbers.

Same content as the static ``all_heads_phase_space.png`` (colour = category at τ, marker = family,
hollow = borderline, the ±τ lines and the weak box), plus what a static figure cannot show: hover
gives model, head, both Δ with their intervals, category, robust category and how the head was
measured; clicking a legend entry hides or shows a model, the buttons show one family or all, and in a
run of more than two tasks a menu switches the pair of tasks on the axes (categories follow the pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ioi_anti.analysis.categories import PAPER_PAIR, Pair, pair_roles
from ioi_anti.figures.study import meaningful_rows
from ioi_anti.figures.style import ablation_label, delta_unit, ordered_families, unit_words
from ioi_anti.models.spec import weights_word
from ioi_anti.tasks import Task

# Plotly marker symbols in the spirit of the static figure's family markers (matplotlib names differ).
FAMILY_SYMBOLS = {"gpt2": "circle", "gpt-neo": "square", "opt": "triangle-up", "pythia": "diamond",
                  "llama": "triangle-down", "gemma": "x", "qwen2": "pentagon"}
CATEGORY_GROUP = "categories"


def all_pairs(tasks: Sequence[Task], first: Pair) -> list[Pair]:
    """``first`` (the run's pair), then every other pair of the run's tasks in run order."""
    others = [Pair(x, y) for x, y in combinations(tasks, 2) if {x.name, y.name} != set(first.names)]
    return [first, *others]


def _hover(pair: Pair) -> str:
    dx, dy = (pair.delta_name(name) for name in pair.names)
    return (f"<b>%{{customdata[0]}} %{{customdata[1]}}</b><br>"
            f"{dx} %{{x:.3f}} [%{{customdata[2]:.3f}}, %{{customdata[3]:.3f}}] (%{{customdata[8]}})<br>"
            f"{dy} %{{y:.3f}} [%{{customdata[4]:.3f}}, %{{customdata[5]:.3f}}] (%{{customdata[9]}})<br>"
            "category %{customdata[6]} (robust: %{customdata[7]})<br>"
            "quant-sensitive: %{customdata[10]}<extra></extra>")


def _quant_words(shown: pd.DataFrame) -> pd.Series:
    """Per head: whether its category (the run's pair) moves when its model is re-quantised, in words."""
    flags = shown["quant_sensitive"] if "quant_sensitive" in shown.columns else pd.Series(pd.NA, index=shown.index)
    return flags.astype("boolean").map({True: "yes", False: "no"}).fillna("not measured").astype(str)


def _symbol(family: str, borderline: pd.Series) -> list[str]:
    base = FAMILY_SYMBOLS.get(family, "cross")
    return [f"{base}-open" if b else base for b in borderline]


def _view(shown: pd.DataFrame, pair: Pair, tau: float) -> dict[str, Any]:
    """Everything the figure draws for one pair: per model trace its points, per category its legend entry,
    and the axes."""
    roles = pair_roles(shown, pair)
    x, y = pair.names
    exact = pd.Series("exact", index=shown.index)
    custom = pd.DataFrame({
        "model": shown["model"], "head": "L" + shown["layer"].astype(str) + "H" + shown["head"].astype(str),
        "x_low": shown[f"delta_{x}_low"], "x_high": shown[f"delta_{x}_high"],
        "y_low": shown[f"delta_{y}_low"], "y_high": shown[f"delta_{y}_high"],
        "category": roles["category"], "robust": roles["category_robust"],
        "measured_x": shown.get(f"measured_by_{x}", exact), "measured_y": shown.get(f"measured_by_{y}", exact),
        "quant_sensitive": _quant_words(shown),
    })
    limit = max(float(shown[[f"delta_{x}", f"delta_{y}"]].abs().max().max()) * 1.08, 2 * tau)
    models = {}
    for family in ordered_families(shown["family"]):
        rows = shown[shown["family"] == family].sort_values("n_params", kind="stable")
        for model, model_rows in rows.groupby("model", sort=False):
            index = model_rows.index
            models[model] = {"x": model_rows[f"delta_{x}"].tolist(), "y": model_rows[f"delta_{y}"].tolist(),
                             "customdata": custom.loc[index].to_numpy().tolist(),
                             "color": roles.loc[index, "category"].map(pair.colours).tolist(),
                             "symbol": _symbol(family, roles.loc[index, "borderline"]), "family": family}
    counts = roles["category"].value_counts()
    legend = [(f"{category} ({int(counts.get(category, 0))})", colour) for category, colour in pair.colours.items()]
    unit = delta_unit(shown)
    axes = {"xaxis": {"title": {"text": f"{pair.delta_name(x)} ({unit_words(pair, x, unit)}; < 0: head supports "
                                        "it)"}, "range": [-limit, limit]},
            "yaxis": {"title": {"text": f"{pair.delta_name(y)} ({unit_words(pair, y, unit)}; < 0: supports)"},
                      "range": [-limit, limit]}}
    return {"models": models, "legend": legend, "axes": axes, "hover": _hover(pair)}


def _pair_menu(views: Sequence[dict[str, Any]], pairs: Sequence[Pair]) -> dict[str, Any]:
    """A drop-down that redraws every trace (points, colours, hover, legend names) and the axes for a pair."""
    buttons = []
    for pair, view in zip(pairs, views, strict=True):
        models = list(view["models"].values())
        restyle = {
            "x": [m["x"] for m in models] + [[None]] * len(view["legend"]),
            "y": [m["y"] for m in models] + [[None]] * len(view["legend"]),
            "customdata": [m["customdata"] for m in models] + [None] * len(view["legend"]),
            "marker.color": [m["color"] for m in models] + [colour for _name, colour in view["legend"]],
            "marker.symbol": [m["symbol"] for m in models] + ["circle"] * len(view["legend"]),
            "hovertemplate": [view["hover"]] * len(models) + [None] * len(view["legend"]),
            "name": list(view["models"]) + [name for name, _colour in view["legend"]],
        }
        relayout = {f"{axis}.{key}": value for axis, settings in view["axes"].items()
                    for key, value in (("title.text", settings["title"]["text"]), ("range", settings["range"]))}
        buttons.append({"label": f"{pair.x.label} vs {pair.y.label}", "method": "update", "args": [restyle, relayout]})
    return {"type": "dropdown", "direction": "down", "buttons": buttons, "x": 1.0, "y": 1.0, "xanchor": "right",
            "yanchor": "bottom", "showactive": True}


def phase_space(heads: pd.DataFrame, tau: float, pairs: Sequence[Pair] = (PAPER_PAIR,)) -> go.Figure:
    """The first pair's Δ (Δ_IOI vs Δ_anti for the paper's) of every head at one τ, with a menu for the other
    ``pairs`` (models whose gap is not positive left out). ``heads`` is categorised (``strong_<task>`` and
    ``robust_<task>`` for every task of the pairs)."""
    shown, flagged, _verb = meaningful_rows(heads)
    views = [_view(shown, pair, tau) for pair in pairs]
    first = views[0]
    fig = go.Figure()
    fig.add_shape(type="rect", x0=-tau, x1=tau, y0=-tau, y1=tau, fillcolor="rgba(0, 0, 0, 0.08)", line={"width": 0},
                  layer="below")
    for value in (-tau, tau):
        fig.add_vline(x=value, line={"dash": "dash", "color": "#888888", "width": 1})
        fig.add_hline(y=value, line={"dash": "dash", "color": "#888888", "width": 1})
    for model, trace in first["models"].items():
        family = trace["family"]
        tunings = shown.loc[shown["family"] == family, "tuning"].astype(str).unique()
        weights = shown.loc[shown["model"] == model, "quantisation"] if "quantisation" in shown else pd.Series()
        quantised = len(weights) and weights.iloc[0] != "none"  # as in the report's tables: quantised ones' type
        fig.add_trace(go.Scatter(
            x=trace["x"], y=trace["y"], mode="markers", legendgroup=family,
            name=f"{model} ({weights_word(str(weights.iloc[0]))})" if quantised else str(model),
            legendgrouptitle_text=f"{family} · {' / '.join(sorted(tunings))}",  # e.g. qwen2 · instruct
            customdata=trace["customdata"], hovertemplate=first["hover"],
            marker={"color": trace["color"], "size": 9, "symbol": trace["symbol"], "line": {"width": 1.5}},
        ))
    for name, colour in first["legend"]:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=CATEGORY_GROUP,
                                 legendgrouptitle_text="Category (colour)", marker={"color": colour, "size": 9},
                                 hoverinfo="skip"))
    groups = [trace.legendgroup for trace in fig.data]
    buttons = [{"label": "all families", "method": "restyle", "args": [{"visible": True}]}] + [
        {"label": family, "method": "restyle", "args": [{"visible": [g in (family, CATEGORY_GROUP) for g in groups]}]}
        for family in ordered_families(shown["family"])
    ]
    menus = [{"type": "buttons", "direction": "right", "buttons": buttons, "x": 0, "y": 1.0, "xanchor": "left",
              "yanchor": "bottom", "showactive": True}]
    if len(pairs) > 1:
        menus.append(_pair_menu(views, pairs))
    title = (f"All {len(shown)} heads of {shown['model'].nunique()} model(s): {ablation_label(heads)} ablation, "
             f"τ = {tau:g}; hollow = borderline (interval crosses τ)")
    if flagged:
        title += f"<br>left out (gap not positive): {', '.join(flagged)}"
    fig.update_layout(
        title={"text": title, "font": {"size": 14}}, template="simple_white", height=620,
        legend={"groupclick": "toggleitem", "itemsizing": "constant"}, hoverlabel={"align": "left"},
        updatemenus=menus,
        xaxis={**first["axes"]["xaxis"], "zeroline": True}, yaxis={**first["axes"]["yaxis"], "zeroline": True},
    )
    return fig
