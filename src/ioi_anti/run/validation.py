"""Every setting of a run checked before any model loads, with one message that lists every problem.

Called by :class:`ioi_anti.run.hooks.RunGuard` before a pipeline runs, whichever pipeline it is, so a
mistake in τ or in a hero-head name costs seconds, not the hours of a sweep that precedes its use.
The parameter files of ``conf/base`` are the schema: a key they do not have is a typo (the error
names the nearest known key), except under the maps whose keys are the user's own (model ids,
hero heads per model, list-item categories).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ioi_anti import execution
from ioi_anti.analysis.categories import pair_of, validate_tau
from ioi_anti.figures.style import FigureStyle
from ioi_anti.hero.effects import check_named_heads, parse_head
from ioi_anti.measure.ablation import ABLATIONS
from ioi_anti.measure.metrics import DELTA_UNITS
from ioi_anti.measure.partitions import MODES
from ioi_anti.models.loading import model_grid
from ioi_anti.models.precision import PRECISIONS
from ioi_anti.models.sources import check_available
from ioi_anti.models.spec import ModelConfigError, ModelSpec, ModelUnavailableError
from ioi_anti.tasks import Task, TaskError, load_tasks

logger = logging.getLogger(__name__)

FREE_FORM = {("model_registry",), ("hero_heads", "named"), ("data_generation", "anti", "categories"),
             ("published", "names")}
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class SettingsError(ValueError):
    """Settings that cannot give a valid run; the message lists every problem found."""


def unknown_keys(params: Mapping[str, Any], schema: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """Keys of ``params`` that ``schema`` (the base parameters) does not have, with the nearest known key."""
    problems = []
    for key, value in params.items():
        where = (*path, str(key))
        if key not in schema:
            near = difflib.get_close_matches(str(key), [str(k) for k in schema], n=1)
            hint = f"; did you mean `{'.'.join((*path, near[0]))}`?" if near else ""
            problems.append(f"unknown parameter `{'.'.join(where)}`{hint}")
        elif isinstance(value, Mapping) and isinstance(schema[key], Mapping) and where not in FREE_FORM:
            problems += unknown_keys(value, schema[key], where)
    return problems


def _get(params: Mapping[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value[part]
    return value


def _check(problems: list[str], params: Mapping[str, Any], dotted: str, ok: Callable[[Any], bool], need: str) -> None:
    """Add a problem when the setting at ``dotted`` is missing or ``ok`` rejects it (or raises)."""
    try:
        value = _get(params, dotted)
    except (KeyError, TypeError):
        problems.append(f"`{dotted}` is missing ({need})")
        return
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        problems.append(f"`{dotted}` = {value!r}: must be {need}")


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _fraction(v: Any) -> bool:
    return isinstance(v, int | float) and 0 < v < 1


def _model_problems(models: Any, registry: Mapping[str, Any]) -> list[str]:
    if isinstance(models, str):
        return [f"`models` = {models!r} is a string, not a list: write `models: [{models}]` in YAML, or "
                f"`--params \"models=[{models}]\"` on the command line (with the brackets)"]
    if not isinstance(models, Sequence) or not models:
        return ["`models` must be a non-empty list of model ids from `model_registry`"]
    problems = []
    if len(set(models)) != len(models):
        problems.append(f"`models` lists a model twice: {list(models)}")
    for model_id in models:
        try:
            spec = ModelSpec.from_registry(str(model_id), dict(registry))
            if spec.source == "gguf":  # its packages are on this machine or not: a cheap look, no weights read
                check_available(spec)
        except (ModelConfigError, ModelUnavailableError) as error:
            problems.append(str(error))
    return problems


def _device_problems(device: Any, cluster: Any) -> list[str]:
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        return [f"`runtime.device` = {device!r}: must be auto, cpu, cuda, cuda:<index> or mps"]
    remote = cluster is not None and cluster != execution.LOCAL  # its workers' devices are checked when it connects
    if device.startswith("cuda") and not remote and not torch.cuda.is_available():
        return [f"`runtime.device` = {device!r} but torch sees no CUDA device here (torch {torch.__version__}): "
                "use `runtime.device=auto` (CUDA when present, else CPU) or `cpu`"]
    return []


def _hero_problems(named: Any, models: Sequence[str], registry: Mapping[str, Any]) -> list[str]:
    if not isinstance(named, Mapping):
        return ["`hero_heads.named` must map model ids to lists of heads, e.g. {gpt2-large: [L34H2]}"]
    problems = []
    for model_id, heads in named.items():
        if str(model_id).split("@")[0] not in registry:
            near = difflib.get_close_matches(str(model_id), list(registry), n=1)
            problems.append(f"`hero_heads.named` names unknown model {model_id!r}"
                            + (f"; did you mean {near[0]!r}?" if near else ""))
        elif model_id not in models:
            logger.warning("hero_heads.named lists heads of %s, which is not among this run's models %s: they "
                           "will NOT be studied.", model_id, list(models))
        for label in heads if isinstance(heads, list | tuple) else [heads]:
            try:
                parse_head(str(label))
            except ValueError as error:
                problems.append(f"`hero_heads.named.{model_id}`: {error}")
    return problems


def _task_problems(names: Any, pair: Any) -> tuple[list[str], list[Task]]:
    """Problems of the ``tasks`` and ``categorisation.pair`` settings, and the tasks when they have none."""
    try:
        tasks = load_tasks(list(names) if isinstance(names, list | tuple) else names)
    except TaskError as error:
        return [f"`tasks`: {error}"], []
    try:
        pair_of(tasks, list(pair) if isinstance(pair, list | tuple) else pair)
    except TaskError as error:
        return [str(error)], tasks
    return [], tasks


def settings_problems(params: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every problem of a run's parameters (empty when the run can start)."""
    task_problems, tasks = _task_problems(params.get("tasks"), params.get("categorisation", {}).get("pair"))
    # a user task's own section of data_generation is free-form: only the task knows its keys
    own = {task.name: params["data_generation"][task.name] for task in tasks
           if task.name in params.get("data_generation", {}) and task.name not in schema.get("data_generation", {})}
    if own:
        schema = {**schema, "data_generation": {**schema["data_generation"], **own}}
    problems = task_problems + unknown_keys(params, schema)
    registry = params.get("model_registry", {})
    problems += _model_problems(params.get("models"), registry)
    for dotted in ("seed", "data_generation.seed", "head_ablation.seed"):
        _check(problems, params, dotted, _int_at_least(0), "an integer >= 0")
    runtime = params.get("runtime", {})
    problems += _device_problems(runtime.get("device"), runtime.get("cluster"))
    problems += execution.cluster_problems(runtime)
    _check(problems, params, "runtime.dtype", lambda v: v in PRECISIONS,
           f"one of {', '.join(PRECISIONS)} (half types: mixed precision, docs/metrics.md)")
    _check(problems, params, "runtime.tf32", lambda v: isinstance(v, bool), "true or false")
    _check(problems, params, "runtime.keep_loaded_gb",
           lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0, "a number of GB >= 0")
    for dotted in ("runtime.max_batch", "runtime.max_rows", "baseline.n_boot", "head_ablation.n_boot",
                   "categorisation.n_boot", "categorisation.n_depth_bins", "hero_heads.n_boot",
                   "hero_heads.max_prompts", "data_generation.ioi.n_prompts", "data_generation.anti.n_prompts",
                   "data_generation.paper_ioi.n_prompts", "data_generation.paper_anti.n_prompts",
                   "data_generation.ioi.min_places", "data_generation.ioi.min_objects",
                   "data_generation.anti.min_categories"):
        _check(problems, params, dotted, _int_at_least(1), "an integer >= 1")
    for dotted in ("hero_heads.top_per_category", "hero_heads.topk_max", "hero_heads.max_receivers",
                   "head_ablation.screen.top_k", "data_generation.ioi.mean_pool_per_template",
                   "data_generation.anti.mean_pool_per_template"):
        _check(problems, params, dotted, _int_at_least(0), "an integer >= 0")
    for task in ("ioi", "paper_ioi", "paper_anti"):
        _check(problems, params, f"data_generation.{task}.min_names", _int_at_least(3),
               "an integer >= 3 (a prompt and its reference need three different names)")
    _check(problems, params, "data_generation.anti.list_lengths",
           lambda v: bool(v) and all(_int_at_least(2)(n) for n in v), "a non-empty list of integers >= 2")
    _check(problems, params, "data_generation.anti.min_items_per_category",
           lambda v: v > max(_get(params, "data_generation.anti.list_lengths")),
           "larger than the longest list, so that some item of the category is left to be new")
    _check(problems, params, "hero_heads.dose_steps", _int_at_least(2), "an integer >= 2 (clean and ablated)")
    _check(problems, params, "head_ablation.ablation", lambda v: v in ABLATIONS, f"one of {', '.join(ABLATIONS)}")
    _check(problems, params, "head_ablation.mode", lambda v: v in MODES, f"one of {', '.join(MODES)}")
    _check(problems, params, "head_ablation.delta", lambda v: v in DELTA_UNITS, f"one of {', '.join(DELTA_UNITS)}")
    sweep = params.get("head_ablation", {})
    if sweep.get("delta") == "raw" and sweep.get("mode") == "screen":
        problems.append("`head_ablation.delta` = 'raw' needs `head_ablation.mode` = 'exact': screening's margin "
                        "and τ are fractions of the task gap")
    _check(problems, params, "head_ablation.screen.margin", lambda v: isinstance(v, int | float) and v >= 0,
           "a number >= 0")
    for dotted in ("head_ablation.ci", "categorisation.ci_level"):
        _check(problems, params, dotted, _fraction, "strictly between 0 and 1")
    _check(problems, params, "categorisation.tau", validate_tau, "strictly between 0 and 1")
    _check(problems, params, "categorisation.sensitivity_taus", lambda v: bool(v) and all(map(validate_tau, v)),
           "a non-empty list of τ values strictly between 0 and 1")
    _check(problems, params, "hero_heads.receivers", lambda v: v in ("strong", "all"), "strong or all")
    _check(problems, params, "hero_heads.verdict.main_share", lambda v: 0 < v <= 1, "in (0, 1]")
    _check(problems, params, "hero_heads.verdict.min_share",
           lambda v: 0 < v <= _get(params, "hero_heads.verdict.main_share"), "in (0, main_share]")
    _check(problems, params, "reporting", lambda r: FigureStyle(r["fig_width_in"], r["font_size"],
                                                                r["panel_height_in"]) is not None,
           "fig_width_in and panel_height_in > 0, font_size >= 8")
    if isinstance(params.get("models"), list):
        problems += _hero_problems(params.get("hero_heads", {}).get("named", {}), params["models"], registry)
    return problems


def check_named_hero_grids(params: Mapping[str, Any]) -> None:
    """Named hero heads of the run's models lie inside each model's grid, read from its config (no
    weights loaded; only models with named heads are read, so the default run pays nothing)."""
    named = {model: heads for model, heads in params["hero_heads"]["named"].items() if model in params["models"]}
    grids = {model: model_grid(ModelSpec.from_registry(model, dict(params["model_registry"]))) for model in named}
    check_named_heads(named, grids)


def validate_settings(params: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise :class:`SettingsError` listing every problem, before any heavy work starts."""
    problems = settings_problems(params, schema)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise SettingsError(f"The run's settings have {len(problems)} problem(s); nothing was run:\n{listed}")
