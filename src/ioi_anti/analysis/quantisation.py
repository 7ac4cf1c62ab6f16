"""What quantising a model's weights does to the study's measurements: every head's Δ and category, and the
Δ_x/Δ_y correlation, of a reference per-head table against the same model measured with quantised weights.

The reference is the float32 model for a toy model (the ground truth), or the shipped model for a real one
(its sensitivity to a second 4-bit perturbation of the same size); ``quantised_to`` names the GGUF type the
compared measurement's weights were quantised to (:mod:`ioi_anti.models.quantise`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ioi_anti.analysis.categories import Pair, categorise, rowwise_pearson

KEYS = ("model", "layer", "head")


def straddles(heads: pd.DataFrame, task: str, tau: float) -> pd.Series:
    """Whether a head's interval for ``task`` contains +τ or −τ: its side of τ is not settled by the
    measurement itself, so a small change of weights may move it across."""
    low, high = heads[f"delta_{task}_low"], heads[f"delta_{task}_high"]
    return ((low < tau) & (high >= tau)) | ((low <= -tau) & (high > -tau))


def head_changes(reference: pd.DataFrame, quantised: pd.DataFrame, tau: float, pair: Pair) -> pd.DataFrame:
    """Per head of ``quantised`` (one row per head and ``quantised_to``): its reference and quantised Δ on
    both tasks of ``pair``, both categories at τ, ``changed`` (the category differs) and ``straddling`` (the
    reference interval of either task contains ±τ)."""
    if "quantised_to" not in quantised.columns:
        raise ValueError("The quantised per-head table has no `quantised_to` column naming its GGUF type.")
    ref = categorise(reference, tau, pair)
    ref["straddling"] = np.logical_or.reduce([straddles(ref, task, tau) for task in pair.names])
    quant = categorise(quantised, tau, pair)
    deltas = [f"delta_{task}" for task in pair.names]
    merged = quant[[*KEYS, "quantised_to", *deltas, "category"]].merge(
        ref[[*KEYS, *deltas, "category", "straddling"]], on=list(KEYS), suffixes=("", "_ref"), validate="many_to_one")
    if len(merged) != len(quant):
        raise ValueError("The quantised per-head table has heads the reference table does not.")
    merged["changed"] = merged["category"] != merged["category_ref"]
    return merged


def mark_quant_sensitive(per_head: pd.DataFrame, requantised: pd.DataFrame | None, tau: float,
                         pair: Pair) -> pd.DataFrame:
    """``per_head`` with ``quant_sensitive`` (nullable boolean): whether a head's category at τ changes when its
    model's weights are re-quantised (:func:`head_changes` against the ``requantised`` per-head tables); missing
    (NA) for a model not measured re-quantised with the run's prompts and settings."""
    out = per_head.copy()
    out["quant_sensitive"] = pd.Series(pd.NA, index=out.index, dtype="boolean")
    measured = set(out["model"]) & (set(requantised["model"]) if requantised is not None else set())
    if not measured:
        return out
    changed = head_changes(out[out["model"].isin(measured)], requantised[requantised["model"].isin(measured)], tau,
                           pair).set_index(list(KEYS))["changed"]
    index = pd.MultiIndex.from_frame(out[list(KEYS)])
    out["quant_sensitive"] = pd.array(changed.reindex(index).to_numpy(object), dtype="boolean")
    return out


def model_effects(changes: pd.DataFrame, pair: Pair) -> pd.DataFrame:
    """Per model and ``quantised_to``: the Pearson r and largest |Δ_q − Δ_ref| of each task's Δ over heads,
    the heads whose category changes (all, and those whose reference interval does not straddle τ), and the
    Δ_x/Δ_y correlation over heads before and after."""
    x, y = pair.names
    rows = []
    for (model, kind), frame in changes.groupby(["model", "quantised_to"], sort=False):
        row = {"model": model, "quantised_to": kind, "n_heads": len(frame)}
        for task in pair.names:
            ref, quant = frame[f"delta_{task}_ref"].to_numpy(float), frame[f"delta_{task}"].to_numpy(float)
            row[f"pearson_{task}"] = float(rowwise_pearson(ref, quant))
            row[f"max_abs_change_{task}"] = float(np.abs(quant - ref).max())
        row["n_changed"] = int(frame["changed"].sum())
        row["n_changed_settled"] = int((frame["changed"] & ~frame["straddling"]).sum())
        row["n_straddling"] = int(frame["straddling"].sum())
        row["r_ref"] = float(rowwise_pearson(frame[f"delta_{x}_ref"].to_numpy(float),
                                             frame[f"delta_{y}_ref"].to_numpy(float)))
        row["r_quantised"] = float(rowwise_pearson(frame[f"delta_{x}"].to_numpy(float),
                                                   frame[f"delta_{y}"].to_numpy(float)))
        row["r_change"] = row["r_quantised"] - row["r_ref"]
        row["changed_heads"] = ", ".join(f"L{r.layer}H{r.head}" for r in frame[frame["changed"]].itertuples())
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_changes(reference: pd.DataFrame, quantised: pd.DataFrame) -> pd.DataFrame:
    """Per model and ``quantised_to``: the largest fall of held-out accuracy over the kinds of prompt
    (``accuracy_change``, ≤ 0 when quantising costs accuracy) and the kind it falls on."""
    merged = quantised[["model", "quantised_to", "kind", "accuracy"]].merge(
        reference[["model", "kind", "accuracy"]], on=["model", "kind"], suffixes=("", "_ref"), validate="many_to_one")
    merged["accuracy_change"] = merged["accuracy"] - merged["accuracy_ref"]
    worst = merged.loc[merged.groupby(["model", "quantised_to"], sort=False)["accuracy_change"].idxmin()]
    return worst[["model", "quantised_to", "accuracy_change", "kind"]].rename(columns={"kind": "accuracy_kind"})
