"""An audit of the study's published tables (``data/01_raw/published``), measured from the tables themselves.

The published per-head table (``joint_ioi_anti_repeat_all.csv``) is the basis of every published figure. This
module checks it against the models' public architectures, looks for duplicated, zero-filled and copied
values, recomputes the published correlations and head categories from it, and judges what the published
prompt forms measure against the definitions in the design notes. Every number the audit reports is computed
here from the tables; none is written in. :func:`zero_fill_correlation` replays the published top-k shortcut
on a complete per-head table, so that a report can show what the shortcut does to a correlation.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ioi_anti.analysis.categories import rowwise_pearson

X, Y = "delta_ioi", "delta_anti"
KEY = ["layer", "head"]
COLUMNS = ["model", "check", "count", "value", "published", "examples", "finding"]
N_EXAMPLES = 3
MATCH_ATOL = 1e-9  # a recomputed value "matches" a published one within this (float round-off only)

# The public (n_layers, n_heads) of the nine published models, named as in the CSVs' `model` column
# (SOURCE.md, last item of "How the published numbers were made").
ARCHITECTURES: dict[str, tuple[int, int]] = {
    "gpt2": (12, 12),
    "gpt2-medium": (24, 16),
    "gpt2-large": (36, 20),
    "gpt-neo-125M": (12, 12),
    "opt-125m": (12, 12),
    "pythia-70m": (6, 8),
    "pythia-160m": (12, 12),
    "pythia-410m": (24, 16),
    "pythia-1b": (16, 8),
}

# The published prompt forms, from SOURCE.md ("How the published numbers were made"): correct B, distractor A.
PUBLISHED_IOI_TEMPLATE = "When {A} and {B} went to the store, {A} gave a gift to"
PUBLISHED_ANTI_TEMPLATE = " {A} met {B}. {A} talked to"

NAME_CHOICE = "name-choice"
LIST = "list (new item)"
COPY = "copy"
OTHER = "other"
KIND_WORDS = {
    NAME_CHOICE: "both candidates appear earlier in the prompt, so the model chooses between two tokens it has "
                 "seen (the IOI structure)",
    LIST: "the right candidate is new and the wrong one is already in the prompt, so the model must avoid "
          "repeating (the list task)",
    COPY: "the right candidate is already in the prompt and the wrong one is not, so the model must repeat",
    OTHER: "neither candidate appears in the prompt",
}


@dataclass(frozen=True)
class PublishedTask:
    """A published task's prompt form: its template, the slot of the right answer and of the distractor, and
    the kind of task design.md defines under its name."""

    task: str
    label: str
    template: str
    answer: str
    distractor: str
    intended: str


# design.md, "The two behaviours and their metrics": IOI chooses between two names in the prompt; the
# anti-repetition task is about lists (a new item is right, an in-context item wrong).
PUBLISHED_TASKS = (
    PublishedTask("ioi", "IOI", PUBLISHED_IOI_TEMPLATE, "B", "A", NAME_CHOICE),
    PublishedTask("anti", "anti-repeat", PUBLISHED_ANTI_TEMPLATE, "B", "A", LIST),
)


@dataclass(frozen=True)
class TaskJudgement:
    """What a prompt form measures: its kind (one of the ``KIND_WORDS`` keys), its slots in prompt order, the
    slots it repeats, and whether each candidate appears in the prompt."""

    kind: str
    slot_order: tuple[str, ...]
    repeated_slots: tuple[str, ...]
    answer_in_prompt: bool
    distractor_in_prompt: bool

    def pattern(self, answer_slot: str) -> str:
        """The slot sequence and the answer, e.g. ``A B A -> B``: equal patterns are the same task."""
        return f"{' '.join(self.slot_order)} -> {answer_slot}"


def _fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def _occurrences(template: str, candidate: str) -> int:
    """How often a candidate occurs in a prompt: as a ``{candidate}`` slot or as a whole literal word."""
    literal = re.sub(r"\{[^{}]*\}", " ", template)
    return _fields(template).count(candidate) + len(re.findall(rf"\b{re.escape(candidate)}\b", literal))


def classify_task(template: str, answer_slot: str, distractor_slot: str) -> TaskJudgement:
    """Judge what a prompt form measures from where its two candidates occur.

    ``answer_slot`` and ``distractor_slot`` name ``{slots}`` of the template, or literal words of a concrete
    prompt; one absent from the prompt is a candidate the prompt has not shown (e.g. a new list item). Both
    candidates in the prompt make a name-choice task: the model picks one of two tokens it has seen, which is
    IOI's structure whatever the task is called. A new right candidate against an in-context wrong one is the
    list task design.md asks anti-repetition to be; the reverse is a copy task.
    """
    answer_in = _occurrences(template, answer_slot) > 0
    distractor_in = _occurrences(template, distractor_slot) > 0
    kind = {(True, True): NAME_CHOICE, (False, True): LIST, (True, False): COPY}.get((answer_in, distractor_in), OTHER)
    slots = _fields(template)
    repeated = tuple(dict.fromkeys(s for s in slots if slots.count(s) > 1))
    return TaskJudgement(kind, tuple(slots), repeated, answer_in, distractor_in)


def _num(value: float) -> str:
    return "0.0" if value == 0 else f"{value:.3g}"


def percent(value: float) -> str:
    """A share as a whole percentage (``–`` where it is not a number), as the audit writes it."""
    return "–" if np.isnan(value) else f"{value:.0%}"


def _head_examples(rows: pd.DataFrame, n: int = N_EXAMPLES) -> str:
    """Up to ``n`` rows as ``L7H3 (delta_ioi=-0.12, delta_anti=0.0)``, then ``…`` if there are more."""
    shown = [f"L{r.layer}H{r.head} ({X}={_num(getattr(r, X))}, {Y}={_num(getattr(r, Y))})"
             for r in rows.head(n).itertuples(index=False)]
    return "; ".join(shown) + ("; …" if len(rows) > n else "")


def _row(model: str, check: str, count: int, finding: str, value: float = np.nan, published: float = np.nan,
         examples: str = "") -> dict[str, object]:
    return {"model": model, "check": check, "count": int(count), "value": float(value),
            "published": float(published), "examples": examples, "finding": finding}


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two equal-length arrays (:func:`ioi_anti.analysis.categories.rowwise_pearson`, the project's one
    correlation); NaN with fewer than 3 points or a constant array."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(rowwise_pearson(x, y)) if len(x) >= 3 else np.nan


def zero_filled(table: pd.DataFrame, x: str = X, y: str = Y) -> pd.Series:
    """Rows whose ``x`` or ``y`` is exactly 0.0: in a joined top-k table, the heads missing from one list."""
    return (table[x] == 0.0) | (table[y] == 0.0)


def zero_fill_share(table: pd.DataFrame, x: str = X, y: str = Y) -> float:
    """The fraction of the covariance sum Σ(x−x̄)(y−ȳ), means over all rows, contributed by zero-filled rows.

    1.0 means the zero-filled rows alone make the correlation; it can leave [0, 1] when rows pull opposite
    ways. NaN when the sum is 0 or there are no rows.
    """
    xs, ys = table[x].to_numpy(float), table[y].to_numpy(float)
    if len(xs) == 0:
        return np.nan
    products = (xs - xs.mean()) * (ys - ys.mean())
    total = products.sum()
    return float(products[zero_filled(table, x, y).to_numpy()].sum() / total) if total != 0 else np.nan


def join_top_k(per_head: pd.DataFrame, top_k: int, x: str = X, y: str = Y) -> pd.DataFrame:
    """The published shortcut: per model, the ``top_k`` most negative heads of each task, joined on
    (model, layer, head), 0.0 written for a head missing from one list."""
    lists = [per_head.sort_values(c, kind="stable").groupby("model", sort=False).head(top_k)[["model", *KEY, c]]
             for c in (x, y)]
    return lists[0].merge(lists[1], on=["model", *KEY], how="outer").fillna({x: 0.0, y: 0.0})


def zero_fill_correlation(per_head: pd.DataFrame, top_k: int, x: str = X, y: str = Y) -> pd.DataFrame:
    """Per model, Pearson r over all heads against r over the zero-filled top-k union of :func:`join_top_k`.

    ``per_head`` must be complete (every head measured for both tasks, each once). Returns model, n_heads,
    r_all_heads, n_union, n_zero_filled, r_top_k_union and zero_fill_share (see :func:`zero_fill_share`).
    """
    if per_head[[x, y]].isna().to_numpy().any():
        raise ValueError(f"zero_fill_correlation needs every head measured: {x} or {y} has missing values")
    if per_head.duplicated(["model", *KEY]).any():
        raise ValueError("zero_fill_correlation needs each (model, layer, head) once")
    joined = join_top_k(per_head, top_k, x, y)
    rows = []
    for model, heads in per_head.groupby("model", sort=False):
        union = joined[joined["model"] == model]
        rows.append({"model": model, "n_heads": len(heads), "r_all_heads": pearson(heads[x], heads[y]),
                     "n_union": len(union), "n_zero_filled": int(zero_filled(union, x, y).sum()),
                     "r_top_k_union": pearson(union[x], union[y]), "zero_fill_share": zero_fill_share(union, x, y)})
    return pd.DataFrame(rows)


def _architecture_checks(model: str, rows: pd.DataFrame, architecture: tuple[int, int] | None) -> list[dict]:
    """impossible_heads and heads_listed, or one architecture_unknown row."""
    if architecture is None:
        return [_row(model, "architecture_unknown", len(rows),
                     f"No architecture is known for {model}, so its {len(rows)} rows cannot be checked against "
                     "its layers and heads.")]
    n_layers, n_heads = architecture
    impossible = (rows["layer"] < 0) | (rows["layer"] >= n_layers) | (rows["head"] < 0) | (rows["head"] >= n_heads)
    valid = rows.loc[~impossible, KEY].drop_duplicates()
    total = n_layers * n_heads
    return [
        _row(model, "impossible_heads", impossible.sum(),
             f"{impossible.sum()} of {model}'s {len(rows)} rows name a head outside its {n_layers} layers x "
             f"{n_heads} heads.", examples=_head_examples(rows[impossible])),
        _row(model, "heads_listed", len(valid),
             f"{len(valid)} of {model}'s {total} heads ({len(valid) / total:.0%}) are listed.",
             value=len(valid) / total),
    ]


def _duplicate_check(model: str, rows: pd.DataFrame) -> dict:
    """duplicate_rows: extra rows of a (layer, head) already listed; value = heads whose copies disagree."""
    repeated = rows[rows.duplicated(KEY, keep=False)]
    disagreeing = repeated.groupby(KEY)[[X, Y]].nunique().gt(1).any(axis=1).sum()
    extra = rows.duplicated(KEY).sum()
    return _row(model, "duplicate_rows", extra,
                f"{extra} of {model}'s rows repeat a (layer, head) already listed; {disagreeing} of the repeated "
                "heads carry different values in their copies.",
                value=disagreeing, examples=_head_examples(repeated))


def _zero_fill_checks(model: str, rows: pd.DataFrame) -> list[dict]:
    """zero_filled per column (value = share of the model's rows), correlation without them, and their share."""
    out = []
    for column in (X, Y):
        zeros = rows[rows[column] == 0.0]
        out.append(_row(model, f"zero_filled:{column}", len(zeros),
                        f"{len(zeros)} of {model}'s {len(rows)} rows have {column} = 0.0 exactly, the join's fill "
                        "for a head missing from that task's top-k list.",
                        value=len(zeros) / len(rows) if len(rows) else np.nan, examples=_head_examples(zeros)))
    filled = zero_filled(rows)
    measured = rows[~filled]
    r_measured = pearson(measured[X], measured[Y])
    out.append(_row(model, "correlation_without_zero_fill", len(measured),
                    f"Over the {len(measured)} rows of {model} with both deltas nonzero, r = {r_measured:.3f}."
                    if len(measured) >= 3 else
                    f"Only {len(measured)} rows of {model} have both deltas nonzero, too few for a correlation.",
                    value=r_measured))
    share = zero_fill_share(rows)
    out.append(_row(model, "zero_fill_covariance_share", filled.sum(),
                    f"The {filled.sum()} zero-filled rows of {model} contribute {percent(share)} of the covariance "
                    "sum Σ(x−x̄)(y−ȳ) of delta_ioi and delta_anti over all its rows (means over all rows).",
                    value=share))
    return out


def _correlation_check(model: str, rows: pd.DataFrame, published: float) -> dict:
    """correlation_recomputed: r over the published rows, zero fill included, against the published r."""
    r = pearson(rows[X], rows[Y])
    if np.isnan(r):
        verdict = "too few rows for a correlation"
    elif np.isnan(published):
        verdict = "no correlation is published for it"
    elif np.isclose(r, published, rtol=0, atol=MATCH_ATOL):
        verdict = f"the published {published:.3f} is this value (difference {abs(r - published):.1e})"
    else:
        verdict = f"the published value is {published:.3f} (difference {r - published:+.3f})"
    return _row(model, "correlation_recomputed", len(rows),
                f"Over {model}'s {len(rows)} published rows, zero fill included, r = {r:.3f}; {verdict}.",
                value=r, published=published)


CATEGORY_COLUMNS = {"anti-only": "n_anti_only", "IOI-only": "n_ioi_only", "shared": "n_shared", "weak": "n_weak"}


def _category_checks(model: str, rows: pd.DataFrame, summary: pd.Series | None, tau: float,
                     architecture: tuple[int, int] | None) -> list[dict]:
    """categories_recomputed at tau (strong = |delta| >= tau) and weak_denominator (what the four counts cover)."""
    ioi, anti = rows[X].abs() >= tau, rows[Y].abs() >= tau
    recomputed = {"anti-only": (anti & ~ioi).sum(), "IOI-only": (ioi & ~anti).sum(), "shared": (ioi & anti).sum(),
                  "weak": (~ioi & ~anti).sum()}
    if summary is None:
        return [_row(model, "categories_recomputed", 0,
                     f"No category summary is published for {model}; at τ = {tau} its rows give "
                     + ", ".join(f"{n} {name}" for name, n in recomputed.items()) + ".")]
    published = {name: int(summary[column]) for name, column in CATEGORY_COLUMNS.items()}
    differ = [name for name in recomputed if recomputed[name] != published[name]]
    examples = ", ".join(f"{name} {recomputed[name]}/{published[name]}" for name in recomputed) + \
        " (recomputed/published)"
    total = sum(published.values())
    heads = "unknown" if architecture is None else str(architecture[0] * architecture[1])
    return [
        _row(model, "categories_recomputed", len(differ),
             f"At τ = {tau}, {len(differ)} of the four category counts of {model} recomputed from its rows differ "
             "from the published summary" + (f" ({', '.join(differ)})." if differ else "."),
             value=recomputed["shared"], published=published["shared"], examples=examples),
        _row(model, "weak_denominator", total,
             f"The published counts of {model} add up to {total}, against {len(rows)} listed rows and {heads} "
             "heads in the model, so 'weak' counts "
             + ("only listed heads." if total == len(rows) else "neither the listed rows nor all heads exactly."),
             value=len(rows), examples=f"published total {total}, rows {len(rows)}, heads {heads}"),
    ]


def _repeated_value_checks(per_head: pd.DataFrame, models: list[str],
                           architectures: Mapping[str, tuple[int, int]]) -> list[dict]:
    """Nonzero values (and whole sorted nonzero columns) identical in two or more models, per column."""
    out = []
    for column in (X, Y):
        nonzero = per_head[per_head[column] != 0.0]
        owners = nonzero.groupby(column)["model"].agg(lambda s: sorted(set(s)))
        shared = owners[owners.map(len) >= 2]
        examples = "; ".join(f"{_num(v)} in {', '.join(m)}" for v, m in shared.head(N_EXAMPLES).items())
        out.append(_row("all", f"repeated_values:{column}", len(shared),
                        f"{len(shared)} distinct nonzero {column} values appear, to the last bit, in two or more "
                        "models.", examples=examples + ("; …" if len(shared) > N_EXAMPLES else "")))
        for model in models:
            own = nonzero[nonzero["model"] == model]
            hits = own[own[column].isin(shared.index)]
            out.append(_row(model, f"repeated_values:{column}", len(hits),
                            f"{len(hits)} of {model}'s {len(own)} nonzero {column} values also appear in another "
                            "model.", examples=_head_examples(hits)))
        out.extend(_repeated_column_checks(nonzero, models, column, architectures))
    return out


def fitting_architectures(heads: pd.DataFrame, architectures: Mapping[str, tuple[int, int]]) -> list[str]:
    """The models whose architecture holds every (layer, head) of ``heads``: where a copied list can come from."""
    return [model for model, (n_layers, n_heads) in architectures.items()
            if heads["layer"].between(0, n_layers - 1).all() and heads["head"].between(0, n_heads - 1).all()]


def _repeated_column_checks(nonzero: pd.DataFrame, models: list[str], column: str,
                            architectures: Mapping[str, tuple[int, int]]) -> list[dict]:
    """repeated_column: a model whose sorted nonzero column equals another model's, whether at the same heads,
    and which architectures hold those heads."""
    vectors = {m: tuple(np.sort(nonzero.loc[nonzero["model"] == m, column].to_numpy())) for m in models}
    cells = {m: set(nonzero.loc[nonzero["model"] == m, [*KEY, column]].itertuples(index=False)) for m in models}
    out, copied = [], []
    for model in models:
        twins = [m for m in models if m != model and vectors[m] and vectors[m] == vectors[model]]
        same_heads = [m for m in twins if cells[m] == cells[model]]
        detail = ""
        if twins:
            copied.append(model)
            fits = fitting_architectures(nonzero[nonzero["model"] == model], architectures)
            detail = (f", {len(same_heads)} of them at the same (layer, head); the heads carrying them fit the "
                      f"architecture of {', '.join(fits) or 'no known model'}")
        out.append(_row(model, f"repeated_column:{column}", len(twins),
                        f"{model}'s {len(vectors[model])} sorted nonzero {column} values equal those of "
                        f"{len(twins)} other models{detail}.", examples=", ".join(twins)))
    out.append(_row("all", f"repeated_column:{column}", len(copied),
                    f"{len(copied)} models have a nonzero {column} column identical to another model's.",
                    examples=", ".join(copied)))
    return out


def _task_checks() -> list[dict]:
    """task_definition: one row per published task, judged by :func:`classify_task` against design.md."""
    judgements = {t.task: classify_task(t.template, t.answer, t.distractor) for t in PUBLISHED_TASKS}
    patterns = {t.task: judgements[t.task].pattern(t.answer) for t in PUBLISHED_TASKS}
    out = []
    for task in PUBLISHED_TASKS:
        judged = judgements[task.task]
        twins = [t.label for t in PUBLISHED_TASKS if t.task != task.task and patterns[t.task] == patterns[task.task]]
        verdict = ("as design.md defines it" if judged.kind == task.intended else
                   f"but design.md defines it as a {task.intended} task, so it measures {judged.kind} under the "
                   f"{task.label} name")
        same = f"; its slot pattern {patterns[task.task]} is that of the published {', '.join(twins)} prompt" \
            if twins else ""
        out.append(_row("all", f"task_definition:{task.task}", len(judged.repeated_slots),
                        f"The published {task.label} prompt '{task.template}' (answer {task.answer}, distractor "
                        f"{task.distractor}) is a {judged.kind} task: {KIND_WORDS[judged.kind]}, "
                        f"{verdict}{same}; repeated slots: {', '.join(judged.repeated_slots) or 'none'}.",
                        examples=f"'{task.template}' -> {task.answer} (not {task.distractor})"))
    return out


def audit_published(per_head: pd.DataFrame, correlations: pd.DataFrame, categories: pd.DataFrame,
                    architectures: Mapping[str, tuple[int, int]] = ARCHITECTURES, tau: float = 0.05) -> pd.DataFrame:
    """Audit the published per-head table, correlation table and category summary; one row per (model, check).

    ``per_head`` is ``joint_ioi_anti_repeat_all.csv``, ``correlations`` ``corr_vs_scale_cross_family.csv`` and
    ``categories`` ``head_category_summary.csv``. Columns: model ("all" for cross-model checks), check (a stable
    id, ``kind`` or ``kind:column``), count, value, published, examples and finding (one sentence).
    """
    models = list(dict.fromkeys([*per_head["model"], *correlations["model"], *categories["model"]]))
    published_r = correlations.set_index("model")["corr"]
    summaries = categories.set_index("model")
    out: list[dict] = []
    for model in models:
        rows = per_head[per_head["model"] == model]
        architecture = architectures.get(model)
        out += _architecture_checks(model, rows, architecture)
        out.append(_duplicate_check(model, rows))
        out += _zero_fill_checks(model, rows)
        out.append(_correlation_check(model, rows, float(published_r.get(model, np.nan))))
        summary = summaries.loc[model] if model in summaries.index else None
        out += _category_checks(model, rows, summary, tau, architecture)
    out += _repeated_value_checks(per_head, models, architectures)
    out += _task_checks()
    return pd.DataFrame(out, columns=COLUMNS)
