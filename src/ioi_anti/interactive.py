"""The interactive phase space (Plotly): every head of every model, hover for its numbers.

Same content as the static ``all_heads_phase_space.png`` (colour = category at τ, marker = family,
hollow = borderline, the ±τ lines and the weak box), plus what a static figure cannot show: hover
gives model, head, both Δ with their intervals, category, robust category and how the head was
measured; clicking a legend entry hides or shows a model, and the buttons show one family or all.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ioi_anti.plotting import (
    CATEGORY_COLOURS,
    ablation_label,
    meaningful_rows,
    ordered_families,
)

# Plotly marker symbols in the spirit of the static figure's family markers (matplotlib names differ).
FAMILY_SYMBOLS = {"gpt2": "circle", "gpt-neo": "square", "opt": "triangle-up", "pythia": "diamond",
                  "llama": "triangle-down", "gemma": "x", "qwen2": "pentagon"}
HOVER = (
    "<b>%{customdata[0]} %{customdata[1]}</b><br>"
    "Δ_IOI %{x:.3f} [%{customdata[2]:.3f}, %{customdata[3]:.3f}] (%{customdata[8]})<br>"
    "Δ_anti %{y:.3f} [%{customdata[4]:.3f}, %{customdata[5]:.3f}] (%{customdata[9]})<br>"
    "category %{customdata[6]} (robust: %{customdata[7]})<extra></extra>"
)


def _symbol(family: str, borderline: pd.Series) -> list[str]:
    base = FAMILY_SYMBOLS.get(family, "cross")
    return [f"{base}-open" if b else base for b in borderline]


def phase_space(heads: pd.DataFrame, tau: float) -> go.Figure:
    """Δ_IOI vs Δ_anti of every head at one τ (models whose gap is not positive left out)."""
    shown, flagged, _verb = meaningful_rows(heads)
    fig = go.Figure()
    limit = max(float(shown[["delta_ioi", "delta_anti"]].abs().max().max()) * 1.08, 2 * tau)
    fig.add_shape(type="rect", x0=-tau, x1=tau, y0=-tau, y1=tau, fillcolor="rgba(0, 0, 0, 0.08)", line={"width": 0},
                  layer="below")
    for value in (-tau, tau):
        fig.add_vline(x=value, line={"dash": "dash", "color": "#888888", "width": 1})
        fig.add_hline(y=value, line={"dash": "dash", "color": "#888888", "width": 1})
    exact = pd.Series("exact", index=shown.index)
    measured = {task: shown.get(f"measured_by_{task}", exact) for task in ("ioi", "anti")}
    custom = pd.DataFrame({
        "model": shown["model"], "head": "L" + shown["layer"].astype(str) + "H" + shown["head"].astype(str),
        "ioi_low": shown["delta_ioi_low"], "ioi_high": shown["delta_ioi_high"],
        "anti_low": shown["delta_anti_low"], "anti_high": shown["delta_anti_high"],
        "category": shown["category"], "robust": shown["category_robust"],
        "measured_ioi": measured["ioi"], "measured_anti": measured["anti"],
    })
    for family in ordered_families(shown["family"]):
        rows = shown[shown["family"] == family].sort_values("n_params", kind="stable")
        group_title = f"{family} · {' / '.join(sorted(rows['tuning'].astype(str).unique()))}"  # e.g. qwen2 · instruct
        for model, model_rows in rows.groupby("model", sort=False):
            fig.add_trace(go.Scatter(
                x=model_rows["delta_ioi"], y=model_rows["delta_anti"], mode="markers", name=str(model),
                legendgroup=family, legendgrouptitle_text=group_title,
                customdata=custom.loc[model_rows.index].to_numpy(), hovertemplate=HOVER,
                marker={"color": model_rows["category"].map(CATEGORY_COLOURS).tolist(), "size": 9,
                        "symbol": _symbol(family, model_rows["borderline"]), "line": {"width": 1.5}},
            ))
    for category, colour in CATEGORY_COLOURS.items():
        count = int((shown["category"] == category).sum())
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{category} ({count})",
                                 legendgroup="categories", legendgrouptitle_text="Category (colour)",
                                 marker={"color": colour, "size": 9}, hoverinfo="skip"))
    families = [trace.legendgroup for trace in fig.data]
    buttons = [{"label": "all families", "method": "restyle", "args": [{"visible": True}]}] + [
        {"label": family, "method": "restyle",
         "args": [{"visible": [g in (family, "categories") for g in families]}]}
        for family in ordered_families(shown["family"])
    ]
    title = (f"All {len(shown)} heads of {shown['model'].nunique()} model(s): {ablation_label(heads)} ablation, "
             f"τ = {tau:g}; hollow = borderline (interval crosses τ)")
    if flagged:
        title += f"<br>left out (gap not positive): {', '.join(flagged)}"
    fig.update_layout(
        title={"text": title, "font": {"size": 14}}, template="simple_white", height=620,
        legend={"groupclick": "toggleitem", "itemsizing": "constant"}, hoverlabel={"align": "left"},
        updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "x": 0, "y": 1.0,
                      "xanchor": "left", "yanchor": "bottom", "showactive": True}],
        xaxis={"title": "Δ_IOI (fraction of IOI gap; < 0: head supports IOI)", "range": [-limit, limit],
               "zeroline": True},
        yaxis={"title": "Δ_anti (fraction of anti-repetition gap; < 0: supports)", "range": [-limit, limit],
               "zeroline": True},
    )
    return fig
