"""Head categories, strong-head counts and Δ correlations between tasks: pure table functions.

A head is *strong* for a task when ``|Δ| >= τ`` and *robust* when its whole 95% interval lies
beyond τ on one side (``low >= τ`` or ``high <= -τ``). The category of a head combines the two
tasks of the run's :class:`Pair` (``categorisation.pair``; the paper's is IOI and anti-repetition):
"<x>-only", "<y>-only" (named by the tasks' ``short`` labels, e.g. "IOI-only", "anti-only"),
"shared" (both strong) or "weak" (neither). Δ < 0 means the head supports the behaviour (ablating
it hurts), Δ > 0 that it opposes it. Every task of the run also gives each head a role signature.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ioi_anti.tasks import PAIR, Task, TaskError, load_task, load_tasks

SHARED, WEAK = "shared", "weak"
SHARED_COLOUR, WEAK_COLOUR = "#009E73", "#AAAAAA"
# Okabe–Ito colours (colour-blind safe) a pair's task takes when its own would clash with another category's
SPARE_COLOURS = ("#0072B2", "#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
MODEL_COLUMNS = ("model", "family", "tuning", "quantisation", "n_params", "n_layers", "n_heads", "ablation", "gap_ok")
CHECKPOINT_COLUMNS = ("base_model", "checkpoint", "training_step")  # carried along where the per-head table has them
REQUIRED_COLUMNS = (*MODEL_COLUMNS, "layer", "head")


@dataclass(frozen=True)
class Pair:
    """The two tasks whose head roles make the four categories, with the names and colours they give them.

    ``x`` is drawn on the horizontal axis of the phase space, ``y`` on the vertical one.
    """

    x: Task
    y: Task

    def __post_init__(self) -> None:
        if self.x.name == self.y.name or self.x.short == self.y.short:
            raise TaskError(f"categorisation.pair needs two different tasks (with different short labels); got "
                            f"{self.x.name} and {self.y.name}.")

    @property
    def tasks(self) -> tuple[Task, Task]:
        return self.x, self.y

    @property
    def names(self) -> tuple[str, str]:
        return self.x.name, self.y.name

    @property
    def categories(self) -> tuple[str, str, str, str]:
        """``("<x>-only", "<y>-only", "shared", "weak")``, e.g. ``("IOI-only", "anti-only", "shared", "weak")``."""
        return f"{self.x.short}-only", f"{self.y.short}-only", SHARED, WEAK

    @property
    def strong_categories(self) -> tuple[str, str, str]:
        return self.categories[:3]

    @property
    def task_colours(self) -> dict[str, str]:
        """Colour per task of the pair: its own, unless that is the shared or weak heads' colour or the other
        task's, in which case the first spare colour that clashes with nothing."""
        used, colours = {SHARED_COLOUR.lower(), WEAK_COLOUR.lower()}, {}
        for task in self.tasks:
            colour = task.colour if task.colour.lower() not in used else next(
                c for c in SPARE_COLOURS if c.lower() not in used | {t.colour.lower() for t in self.tasks})
            colours[task.name] = colour
            used.add(colour.lower())
        return colours

    @property
    def colours(self) -> dict[str, str]:
        """Colour per category: each task's colour (:attr:`task_colours`) for its "-only" heads."""
        x, y = (self.task_colours[name] for name in self.names)
        return dict(zip(self.categories, (x, y, SHARED_COLOUR, WEAK_COLOUR), strict=True))

    @property
    def columns(self) -> tuple[str, ...]:
        """The per-head columns the pair's categories are made of: each task's Δ and its interval."""
        return tuple(f"delta_{name}{suffix}" for name in self.names for suffix in ("", "_low", "_high"))

    def short_category(self, category: str) -> str:
        """A category's name in tight labels: the task's short label for its "-only" heads."""
        return {self.categories[0]: self.x.short, self.categories[1]: self.y.short}.get(category, category)

    def delta_name(self, task: str) -> str:
        """``Δ_<short>`` of one of the pair's tasks, as text (``Δ_IOI``)."""
        return f"Δ_{self.tasks[self.names.index(task)].short}"


PAPER_PAIR = Pair(load_task(PAIR[0]), load_task(PAIR[1]))


def pair_of(tasks: Sequence[Task], pair: Sequence[str]) -> Pair:
    """The tasks named in ``categorisation.pair`` (task names) among the run's ``tasks``, or a TaskError that
    says what to write."""
    by_name = {task.name: task for task in tasks}
    if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise TaskError(f"categorisation.pair must name two tasks, e.g. [ioi, anti]; got {pair!r}.")
    missing = [str(name) for name in pair if name not in by_name]
    if missing:
        raise TaskError(f"categorisation.pair names {missing}, not among the run's tasks {sorted(by_name)}; name "
                        "two of them (a task of your own by its name, not its import path).")
    return Pair(by_name[str(pair[0])], by_name[str(pair[1])])


def run_pair(tasks: Sequence[str], pair: Sequence[str]) -> Pair:
    """The run's pair from the ``tasks`` parameter (names or import paths) and ``categorisation.pair``."""
    return pair_of(load_tasks(tasks), pair)
# |Δ| is compared with τ up to float round-off, so that a Δ of exactly τ (e.g. 0.15 - 0.1) is strong;
# far below the precision of any measured Δ.
_TAU_ATOL = 1e-12


def validate_tau(tau: float) -> float:
    """Return ``tau`` as a float if it lies strictly inside (0, 1), else raise ValueError."""
    value = float(tau)
    if not 0.0 < value < 1.0:
        raise ValueError(f"τ must lie strictly inside (0, 1); got {tau!r}.")
    return value


def tau_grid(tau: float, sensitivity_taus: Iterable[float]) -> list[float]:
    """Sorted, de-duplicated, validated τ values: the default τ plus the sensitivity list."""
    return sorted({validate_tau(t) for t in (tau, *sensitivity_taus)})


def _check_columns(per_head: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in per_head.columns]
    if missing:
        raise ValueError(f"per-head table lacks column(s) {missing}.")


def _check_model_grid(model: str, rows: pd.DataFrame) -> None:
    """Raise ValueError unless ``rows`` are exactly the model's layer x head grid, with finite Δ."""
    for column in ("n_layers", "n_heads"):
        if rows[column].nunique() != 1:
            raise ValueError(f"model {model!r}: {column} is not constant ({sorted(rows[column].unique())}).")
    n_layers, n_heads = int(rows["n_layers"].iloc[0]), int(rows["n_heads"].iloc[0])
    pairs = list(zip(rows["layer"].astype(int), rows["head"].astype(int), strict=True))
    duplicated = sorted({p for p, dup in zip(pairs, rows.duplicated(["layer", "head"]), strict=True) if dup})
    if duplicated:
        raise ValueError(f"model {model!r}: duplicated (layer, head) pair(s) {duplicated[:5]}.")
    expected = {(layer, head) for layer in range(n_layers) for head in range(n_heads)}
    outside = sorted(set(pairs) - expected)
    if outside:
        raise ValueError(
            f"model {model!r}: (layer, head) pair(s) {outside[:5]} outside the {n_layers} x {n_heads} grid."
        )
    missing = sorted(expected - set(pairs))
    if missing:
        raise ValueError(f"model {model!r}: {len(missing)} head(s) missing from the grid, e.g. {missing[:5]}.")
    for column in (f"delta_{task}" for task in table_tasks(rows)):
        n_bad = int((~np.isfinite(rows[column].to_numpy(dtype=float))).sum())
        if n_bad:
            raise ValueError(f"model {model!r}: {n_bad} non-finite value(s) in {column}.")


def validate_grid(per_head: pd.DataFrame) -> None:
    """Check every model covers its full ``range(n_layers) x range(n_heads)`` grid exactly once.

    Raises ValueError naming the model and the problem (duplicate, out-of-range or missing head,
    or NaN Δ), since any of these silently biases counts and correlations.
    """
    _check_columns(per_head, REQUIRED_COLUMNS)
    if per_head.empty:
        raise ValueError("per-head table is empty.")
    for model, rows in per_head.groupby("model", sort=True):
        _check_model_grid(str(model), rows)


def _category(x: pd.Series, y: pd.Series, pair: Pair) -> np.ndarray:
    """Category name per head from the pair's two boolean 'strong' (or 'robust') flags."""
    x_only, y_only, shared, weak = pair.categories
    return np.select([x & y, x, y], [shared, x_only, y_only], default=weak)


def pair_roles(categorised: pd.DataFrame, pair: Pair) -> pd.DataFrame:
    """``category``, ``category_robust`` and ``borderline`` (strong for a task of the pair but not robust for
    it) of every head on ``pair``, from a table with ``strong_<task>`` / ``robust_<task>`` for both tasks."""
    strong, robust = ({name: categorised[f"{kind}_{name}"] for name in pair.names} for kind in ("strong", "robust"))
    x, y = pair.names
    return pd.DataFrame({
        "category": _category(strong[x], strong[y], pair),
        "category_robust": _category(robust[x], robust[y], pair),
        "borderline": (strong[x] & ~robust[x]) | (strong[y] & ~robust[y]),
    }, index=categorised.index)


def table_tasks(per_head: pd.DataFrame) -> list[str]:
    """The tasks of a per-head table (those with ``delta_<task>`` and its interval), in column order."""
    return [c.removeprefix("delta_") for c in per_head.columns
            if c.startswith("delta_") and not c.endswith(("_low", "_high"))
            and {f"{c}_low", f"{c}_high"} <= set(per_head.columns)]


def signature(strong: pd.DataFrame, tasks: Sequence[str]) -> pd.Series:
    """A head's role signature: the tasks it is strong on, joined by "+" in run order ("none" for none)."""
    names = np.array(tasks, dtype=object)
    flags = strong[[f"strong_{t}" for t in tasks]].to_numpy(bool) if len(strong) else np.zeros((0, len(tasks)), bool)
    return pd.Series(["+".join(names[row]) or "none" for row in flags], index=strong.index, dtype=object)


def categorise(per_head: pd.DataFrame, tau: float, pair: Pair = PAPER_PAIR) -> pd.DataFrame:
    """Categorise every head at one τ.

    Adds, per task of the table, ``strong_<task>`` (|Δ| >= τ), ``robust_<task>`` (interval entirely
    beyond τ on one side) and ``sign_<task>`` ("supports" for Δ < 0, "opposes" for Δ > 0, "none" for 0);
    ``category``, ``category_robust`` and ``borderline`` (strong for a task of the pair but not robust
    for it) from ``pair``; and ``signature`` / ``signature_robust``, the tasks a head is strong (robust) on.
    """
    tau = validate_tau(tau)
    _check_columns(per_head, (*REQUIRED_COLUMNS, *pair.columns))
    out = per_head.copy()
    out["tau"] = tau
    tasks = table_tasks(per_head)
    for task in tasks:
        delta = out[f"delta_{task}"].astype(float)
        out[f"strong_{task}"] = delta.abs() >= tau - _TAU_ATOL
        out[f"robust_{task}"] = (out[f"delta_{task}_low"] >= tau - _TAU_ATOL) | (
            out[f"delta_{task}_high"] <= -tau + _TAU_ATOL
        )
        out[f"sign_{task}"] = np.select([delta < 0, delta > 0], ["supports", "opposes"], default="none")
    out[["category", "category_robust", "borderline"]] = pair_roles(out, pair)
    out["signature"] = signature(out, tasks)
    robust = out[[f"robust_{t}" for t in tasks]].set_axis([f"strong_{t}" for t in tasks], axis=1)
    out["signature_robust"] = signature(robust, tasks)
    return out


def depth_fraction(layer: pd.Series, n_layers: pd.Series) -> pd.Series:
    """Layer as a fraction of depth, ``layer / (n_layers - 1)`` (0 for one-layer models)."""
    denominator = (n_layers - 1).where(n_layers > 1, 1)
    return layer / denominator


def depth_bin(fraction: pd.Series, n_bins: int) -> pd.Series:
    """Index of the equal-width depth bin, in ``range(n_bins)``, of each depth fraction."""
    if n_bins < 1:
        raise ValueError(f"n_depth_bins must be >= 1; got {n_bins}.")
    return np.minimum(np.floor(fraction * n_bins), n_bins - 1).astype(int)


def categorise_all_taus(per_head: pd.DataFrame, tau: float, sensitivity_taus: Iterable[float],
                        pair: Pair = PAPER_PAIR) -> pd.DataFrame:
    """Long table: one row per head per τ of the default τ and the sensitivity list, categorised on ``pair``.

    ``is_default_tau`` marks the rows at the default τ; ``depth_frac`` is the layer's depth fraction.
    """
    validate_grid(per_head)
    default = validate_tau(tau)
    tables = [categorise(per_head, t, pair).assign(is_default_tau=(t == default))
              for t in tau_grid(tau, sensitivity_taus)]
    table = pd.concat(tables, ignore_index=True)
    table["depth_frac"] = depth_fraction(table["layer"], table["n_layers"])
    return table.sort_values(["tau", "model", "layer", "head"], ignore_index=True)


def _model_info(heads: pd.DataFrame) -> pd.DataFrame:
    """One row of model-level columns (family, tuning, size, ablation, gap flag) per model."""
    columns = [*MODEL_COLUMNS[1:], *(c for c in CHECKPOINT_COLUMNS if c in heads.columns)]
    return heads.groupby("model", sort=True, dropna=False)[columns].first().reset_index()


def strong_head_counts(head_categories: pd.DataFrame, pair: Pair = PAPER_PAIR) -> pd.DataFrame:
    """Heads per model x τ x category of ``pair`` (every category, zeros included).

    ``count`` counts heads of the category; ``n_robust`` those whose robust category is the same;
    ``frac`` is their share of all the model's heads (``n_heads`` stays heads per layer).
    """
    keys = ["model", "tau", "category"]
    counts = head_categories.groupby(keys).size().rename("count")
    robust = head_categories["category"] == head_categories["category_robust"]
    n_robust = head_categories[robust].groupby(keys).size().rename("n_robust")
    grid = pd.MultiIndex.from_product(
        [sorted(head_categories["model"].unique()), sorted(head_categories["tau"].unique()), pair.categories],
        names=keys
    )
    table = pd.concat([counts, n_robust], axis=1).reindex(grid, fill_value=0).fillna(0).astype(int).reset_index()
    default = head_categories.groupby("tau")["is_default_tau"].first().rename("is_default_tau")
    table = table.merge(_model_info(head_categories), on="model").merge(default, on="tau")
    table["frac"] = table["count"] / (table["n_layers"] * table["n_heads"])
    return table


def layer_counts(head_categories: pd.DataFrame, n_depth_bins: int, pair: Pair = PAPER_PAIR) -> pd.DataFrame:
    """Heads per model x τ x layer x category of ``pair``, with the layer's depth fraction and depth bin."""
    keys = ["model", "tau", "layer", "category"]
    counts = head_categories.groupby(keys).size().rename("count")
    frames = []
    for (model, tau), rows in head_categories.groupby(["model", "tau"], sort=True):
        layers = range(int(rows["n_layers"].iloc[0]))
        frames.append(pd.MultiIndex.from_product([[model], [tau], layers, pair.categories], names=keys).to_frame())
    grid = pd.MultiIndex.from_frame(pd.concat(frames, ignore_index=True))
    table = counts.reindex(grid, fill_value=0).reset_index()
    default = head_categories.groupby("tau")["is_default_tau"].first().rename("is_default_tau")
    table = table.merge(_model_info(head_categories), on="model").merge(default, on="tau")
    table["depth_frac"] = depth_fraction(table["layer"], table["n_layers"])
    table["depth_bin"] = depth_bin(table["depth_frac"], n_depth_bins)
    table["n_depth_bins"] = n_depth_bins
    return table


def rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (NaN where either side is constant)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((xc**2).sum(axis=-1) * (yc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (xc * yc).sum(axis=-1) / denominator, np.nan)


def rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation (Pearson of average ranks) along the last axis."""
    return rowwise_pearson(rankdata(x, axis=-1), rankdata(y, axis=-1))


def _model_seed(seed: int, model: str) -> np.random.Generator:
    """A generator per model that does not depend on which other models are in the run."""
    return np.random.default_rng([seed, zlib.crc32(model.encode())])


def bootstrap_correlations(
    x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator, level: float
) -> dict[str, float]:
    """Pearson and Spearman of ``x`` vs ``y`` with percentile bootstrap intervals over the pairs."""
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    tail = 100 * (1 - level) / 2
    result: dict[str, float] = {}
    for name, fn in (("pearson", rowwise_pearson), ("spearman", rowwise_spearman)):
        samples = fn(x[idx], y[idx])
        finite = samples[np.isfinite(samples)]
        low, high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
        result |= {name: float(fn(x, y)), f"{name}_low": float(low), f"{name}_high": float(high)}
    return result


def correlations(per_head: pd.DataFrame, n_boot: int, seed: int, level: float = 0.95,
                 pair: Pair = PAPER_PAIR) -> pd.DataFrame:
    """Per model, Pearson and Spearman of the pair's Δ (Δ_IOI vs Δ_anti for the paper's) over ALL its heads,
    bootstrapped over heads.

    Here ``n_heads`` is the number of heads correlated (n_layers x heads per layer); ``task_x`` and
    ``task_y`` name the pair.

    Using every head (not a union of top-k heads) avoids the selection bias that inflates |r|.
    """
    validate_grid(per_head)
    _check_columns(per_head, pair.columns)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must lie strictly inside (0, 1); got {level}.")
    rows = []
    for model, heads in per_head.groupby("model", sort=True):
        x, y = (heads[f"delta_{name}"].to_numpy(float) for name in pair.names)
        stats = bootstrap_correlations(x, y, n_boot, _model_seed(seed, str(model)), level)
        rows.append({"model": model, "task_x": pair.x.name, "task_y": pair.y.name, "n_heads": len(heads), **stats})
    info = _model_info(per_head).drop(columns="n_heads")
    table = pd.DataFrame(rows).merge(info, on="model")
    table["n_boot"], table["level"] = n_boot, level
    return table


def signature_counts(head_categories: pd.DataFrame) -> pd.DataFrame:
    """Heads per model x τ x role signature (the set of tasks a head is strong on), with how many of them
    are robust for every task of their signature, and their share of the model's heads."""
    keys = ["model", "tau", "signature"]
    frame = head_categories.assign(robust=head_categories["signature"] == head_categories["signature_robust"])
    table = frame.groupby(keys).agg(count=("layer", "size"), n_robust=("robust", "sum")).reset_index()
    table["n_tasks"] = table["signature"].map(lambda s: 0 if s == "none" else s.count("+") + 1)
    default = head_categories.groupby("tau")["is_default_tau"].first().rename("is_default_tau")
    table = table.merge(_model_info(head_categories), on="model").merge(default, on="tau")
    table["frac"] = table["count"] / (table["n_layers"] * table["n_heads"])
    return table.sort_values(["tau", "model", "n_tasks", "count"], ascending=[True, True, True, False],
                             ignore_index=True)


def task_correlations(per_head: pd.DataFrame, n_boot: int, seed: int, level: float = 0.95) -> pd.DataFrame:
    """Per model and pair of the run's tasks, Pearson and Spearman of their Δ over all heads, with
    bootstrap intervals over heads (one resampling per model, shared by every pair)."""
    validate_grid(per_head)
    tasks = table_tasks(per_head)
    rows = []
    for model, heads in per_head.groupby("model", sort=True):
        for i, first in enumerate(tasks):
            for second in tasks[i + 1:]:
                x, y = heads[f"delta_{first}"].to_numpy(float), heads[f"delta_{second}"].to_numpy(float)
                stats = bootstrap_correlations(x, y, n_boot, _model_seed(seed, str(model)), level)
                rows.append({"model": model, "task_x": first, "task_y": second, "n_heads": len(heads), **stats})
    table = pd.DataFrame(rows).merge(_model_info(per_head).drop(columns="n_heads"), on="model")
    table["n_boot"], table["level"] = n_boot, level
    return table


def default_tau_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """The rows of a categorised table at its default τ, and that τ."""
    rows = table[table["is_default_tau"]]
    taus = rows["tau"].unique()
    if len(taus) != 1:
        raise ValueError(f"expected exactly one default τ in the table; found {sorted(taus)}.")
    return rows.reset_index(drop=True), float(taus[0])
