"""The report's two sections on the published results: the audit of the published tables in words
(:func:`audit_words`) and the run set beside them (:func:`side_by_side_words`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ioi_anti.analysis.against_published import COUNTS
from ioi_anti.analysis.categories import Pair
from ioi_anti.analysis.published import MATCH_ATOL, percent
from ioi_anti.report.markdown import markdown_table


def _kind(check: str) -> str:
    return check.split(":")[0]


def _listing(rows: pd.DataFrame) -> str:
    return ", ".join(f"{r.model} {r.count}" for r in rows.itertuples(index=False)) or "none"


def _nonzero(rows: pd.DataFrame) -> pd.Series:
    return rows["count"] > 0


def _every(rows: pd.DataFrame) -> pd.Series:
    return pd.Series(True, index=rows.index)


def _overall_or_nonzero(rows: pd.DataFrame) -> pd.Series:
    return (rows["model"] == "all") | (rows["count"] > 0)


def _unknown_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    return f"Models without a known architecture (rows): {_listing(rows)}."


def _impossible_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    return f"Rows naming a head the model does not have: {rows['count'].sum()} ({_listing(rows[_nonzero(rows)])})."


def _duplicate_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    return (f"{rows['count'].sum()} extra rows repeat a listed (model, layer, head); {int(rows['value'].sum())} "
            "repeated heads disagree in value.")


def _listed_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    return (f"Between {percent(rows['value'].min())} and {percent(rows['value'].max())} of a model's heads are "
            "listed.")


def _zero_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    n_rows = audit.loc[audit["check"] == "correlation_recomputed", "count"].sum()
    return " ".join(f"{check.split(':')[1]} = 0.0 in {group['count'].sum()} of {n_rows} rows."
                    for check, group in rows.groupby("check", sort=False))


def _repeat_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    return " ".join(f"{r.check.split(':')[1]}: {r.count} ({r.examples or 'none'})."
                    for r in rows[rows["model"] == "all"].itertuples(index=False))


def _recomputed_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    matches = (rows["value"] - rows["published"]).abs() <= MATCH_ATOL
    return f"It equals the published r (within {MATCH_ATOL:g}) in {int(matches.sum())} of {len(rows)} models."


def _without_fill_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    with_fill = audit[audit["check"] == "correlation_recomputed"].set_index("model")["value"]
    flips = (np.sign(rows["value"]) * np.sign(rows["model"].map(with_fill)) < 0).sum()
    return (f"It is computable in {int(rows['value'].notna().sum())} of {len(rows)} models, and its sign differs "
            f"from that of the published-rows r in {int(flips)}.")


def _share_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    return f"It ranges from {percent(rows['value'].min())} to {percent(rows['value'].max())} across models."


def _category_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    return f"{int(_nonzero(rows).sum())} of {len(rows)} models have a count that differs."


def _denominator_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    rows_only = int((rows["count"] == rows["value"]).sum())
    return (f"The published total equals the number of listed rows in {rows_only} of {len(rows)} models"
            + (", so there 'weak' leaves out every head that is not in a top-k list." if rows_only else "."))


def _task_words(rows: pd.DataFrame, audit: pd.DataFrame) -> str:
    return " ".join(rows["finding"])


@dataclass(frozen=True)
class CheckKind:
    """How :func:`audit_words` writes one check kind: what it checks and why, the measured numbers in words
    (from its rows and the whole audit), and which of its rows the table shows."""

    intro: str
    measured: Callable[[pd.DataFrame, pd.DataFrame], str]
    shown: Callable[[pd.DataFrame], pd.Series]


CHECK_KINDS: dict[str, CheckKind] = {
    "architecture_unknown": CheckKind(
        "Rows of a model with no known architecture cannot be checked against its layers and heads.",
        _unknown_words, _every),
    "impossible_heads": CheckKind(
        "A row whose layer or head lies outside the model's public architecture cannot be a measurement of that "
        "model.", _impossible_words, _nonzero),
    "duplicate_rows": CheckKind(
        "A (model, layer, head) listed twice counts one head twice in every figure and category.",
        _duplicate_words, _nonzero),
    "heads_listed": CheckKind(
        "Distinct valid heads listed per model; the value is the fraction of all the model's heads.",
        _listed_words, _every),
    "zero_filled": CheckKind(
        "A delta of exactly 0.0 is what the published join writes for a head missing from one task's top-k list, "
        "not a measurement; the value is the share of the model's rows.", _zero_words, _nonzero),
    "repeated_values": CheckKind(
        "Measurements of different models are not expected to agree to the last bit; a nonzero value found in two "
        "or more models points to values carried from one model's table into another's.",
        _repeat_words, _overall_or_nonzero),
    "repeated_column": CheckKind(
        "A model whose whole sorted nonzero column equals another model's has no values of its own for that task.",
        _repeat_words, _overall_or_nonzero),
    "correlation_recomputed": CheckKind(
        "Pearson r of delta_ioi and delta_anti recomputed over each model's published rows, zero fill included, "
        "against the published correlation.", _recomputed_words, _every),
    "correlation_without_zero_fill": CheckKind(
        "The same r over the rows where both deltas are nonzero, that is without the join's zero fill.",
        _without_fill_words, _every),
    "zero_fill_covariance_share": CheckKind(
        "The share of the correlation carried by zero-filled rows: their part of the covariance sum "
        "Σ(x−x̄)(y−ȳ) over all rows, with the means of all rows (1 = they alone make it).",
        _share_words, _every),
    "categories_recomputed": CheckKind(
        "Head categories (strong = |delta| ≥ τ) recomputed from the published rows against the published summary; "
        "count = how many of the four counts differ, value/published = n_shared.", _category_words, _every),
    "weak_denominator": CheckKind(
        "What the four published counts add up to (count), against the listed rows (value) and the model's heads.",
        _denominator_words, _every),
    "task_definition": CheckKind(
        "What each published prompt form measures, judged from where its two candidates occur, against "
        "design.md's definitions.", _task_words, _every),
}


def audit_words(audit: pd.DataFrame) -> str:
    """The audit as a Markdown section: per check kind, what it checks, the measured numbers, and a table of
    the rows that show it."""
    parts = ["## The published tables, audited", ""]
    kinds = audit.assign(kind=audit["check"].map(_kind))
    for name, spec in CHECK_KINDS.items():
        rows = kinds[kinds["kind"] == name]
        if rows.empty:
            continue
        parts += [f"**{name.replace('_', ' ').capitalize()}.** {spec.intro} {spec.measured(rows, audit)}", ""]
        shown = rows[spec.shown(rows)]
        if not shown.empty:
            columns = ["model", *(["check"] if rows["check"].nunique() > 1 else []),
                       "count", "value", "published", "examples"]
            parts += [markdown_table(shown[columns], float_format="{:.3g}"), ""]
    return "\n".join(parts)


def published_protocol(metadata: Mapping[str, object], pair: Pair) -> bool:
    """Whether the run measured the way the published tables were made (``--env paper_protocol``)."""
    return (pair.names == ("paper_ioi", "paper_anti") and metadata.get("ablation") == "zero"
            and metadata.get("delta") == "raw")


def _number(value: float, digits: int = 3) -> str:
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def side_by_side_words(models: pd.DataFrame, heroes: pd.DataFrame, metadata: Mapping[str, object], pair: Pair,
                       tau: float) -> str:
    """The report's section "Against the published results": what the published top-k shortcut does to
    every model's r, then, for the models the study published, the published numbers beside the run's."""
    if models.empty:
        return ""
    shortcut = pd.DataFrame({
        "model": models["model"],
        "r over every head [CI]": [f"{_number(r.r)} [{_number(r.r_low, 2)}, {_number(r.r_high, 2)}]"
                                   for r in models.itertuples()],
        "k": models["top_k"].astype(int),
        "r over the top-k union, zero-filled": models["r_top_k_zero_fill"].map(_number),
    })
    lines = [
        "## Against the published results", "",
        "The published correlations are over the union of each task's top-k heads (most negative Δ), with 0.0 "
        "written for a head missing from one list; this project measures every head for both tasks. The same "
        "shortcut on this run's own table shows what it alone does to r (k: as many heads per task as the "
        "published table lists for the model, else the published scans' top-k):", "",
        markdown_table(shortcut),
    ]
    published = models[models["published_model"].notna()]
    if published.empty:
        lines += ["", "No model of this run is one the study published (`published.names`); the published "
                  "numbers themselves are compared in a run of the paper's models, with the Hub "
                  "(`kedro run --env paper_protocol --config conf/paper_protocol/hub_models.yml`)."]
        return "\n".join(lines)
    protocol = ("This run used the published protocol (the published prompt forms, zero ablation, raw Δ), so "
                "its numbers and the published ones measure the same thing." if published_protocol(metadata, pair)
                else f"This run did not use the published protocol (its pair is {pair.x.label} and {pair.y.label}, "
                     f"{metadata.get('ablation', '?')} ablation, {metadata.get('delta', 'normalised')} Δ): the "
                     "correlations and counts are comparable in kind, the Δ values only under "
                     "`--env paper_protocol`.")
    table = pd.DataFrame({
        "model": published["model"],
        "r over every head": published["r"].map(_number),
        "r published": published["r_published"].map(_number),
        "r, published shortcut on this run": published["r_top_k_zero_fill"].map(_number),
        f"Δ vs published Δ, {pair.x.short} (heads)": [f"{_number(r.listed_pearson_x)} ({r.n_listed_x:.0f})"
                                                      for r in published.itertuples()],
        f"Δ vs published Δ, {pair.y.short} (heads)": [f"{_number(r.listed_pearson_y)} ({r.n_listed_y:.0f})"
                                                      for r in published.itertuples()],
    })
    counts = pd.DataFrame({"model": published["model"], **{
        category: [f"{getattr(r, f'n_{key}')} / {_number(getattr(r, f'n_published_{key}'), 0)}"
                   for r in published.itertuples()] for key, category in zip(COUNTS, pair.categories, strict=True)}})
    lines += [
        "", protocol, "",
        "The models the study published: this run's r beside the published r and the shortcut's, and Pearson r "
        "between this run's Δ and the published Δ over the heads the published table lists with a measured "
        "(nonzero) value.", "", markdown_table(table), "",
        f"Heads per category at τ = {tau:g}: this run (every head) / published (listed heads only).", "",
        markdown_table(counts),
    ]
    if not heroes.empty:
        shown = heroes.assign(head=[f"L{r.layer}H{r.head}" for r in heroes.itertuples()])
        shown = shown[["model", "head", "published_category", "published_delta_x", "published_delta_y",
                       "category", "delta_x", "delta_y"]]
        lines += ["", "The published hero heads in this run:", "", markdown_table(shown)]
    return "\n".join(lines)
