"""Every setting of a run checked before any model loads, with one message that lists every problem.

Called by :class:`ioi_anti.run.hooks.RunGuard` as soon as Kedro has read the configuration, before it
builds the catalog (where its own parameter validation instantiates the typed groups of
:mod:`ioi_anti.params` for the nodes), whichever pipeline runs, so a mistake in τ or in a hero-head
name costs seconds, not the hours of a sweep that precedes its use. The pydantic models are the
schema: each group is validated on its own, so one bad group does not hide the problems of another,
and pydantic's errors are rewritten as one line per setting naming what it must be (the field's
description), with the nearest known key for a misspelled one. The checks that need more than one
group, or this machine (models installed, CUDA present, Dask installed), follow.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, get_args

import torch
from kedro.config import OmegaConfigLoader
from pydantic import BaseModel, ConfigDict, RootModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from ioi_anti import execution
from ioi_anti.analysis.categories import pair_of
from ioi_anti.hero.effects import check_named_heads, parse_head
from ioi_anti.models.loading import model_grid
from ioi_anti.models.sources import check_available
from ioi_anti.models.spec import ModelConfigError, ModelSpec, ModelUnavailableError
from ioi_anti.params import RunSettings
from ioi_anti.tasks import BUILT_IN, Task, TaskError, load_task, load_tasks

logger = logging.getLogger(__name__)

# How the project reads its configuration (settings.py): `--env paper` overrides single keys (the model
# list, prompt counts) of nested parameters.
# Kedro 1.7's OmegaConfigLoader registers its `globals` and `runtime_params` resolvers with OmegaConf's
# register_new_resolver(), which OmegaConf 2.4 deprecates: three UserWarnings at every start, about Kedro's
# code, not this project's or the user's, and nothing to act on. Only that message is silenced.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local", "merge_strategy": {"parameters": "soft"}}


class SettingsError(ValueError):
    """Settings that cannot give a valid run; the message lists every problem found."""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (itself, a list or map of it, an optional one), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if issubclass(annotation, RootModel):
            return _model_in(annotation.model_fields["root"].annotation)
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _walk(model: type[BaseModel] | None, loc: Sequence[int | str]) -> tuple[FieldInfo | None, type[BaseModel] | None]:
    """The field at ``loc`` (list indices, map keys and union branches skipped) and the model around it."""
    info, around = None, model
    for part in loc:
        if around is not None and isinstance(part, str) and part in around.model_fields:
            info = around.model_fields[part]
            around = _model_in(info.annotation)
    return info, around


def _dotted(loc: Sequence[int | str]) -> str:
    """``("grid", "sizes", 0, "n_layer")`` -> ``grid.sizes[0].n_layer``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def describe(error: ErrorDetails, root: type[BaseModel] | None, prefix: tuple[str, ...]) -> str:
    """One line for one pydantic error at ``prefix`` + its location, inside the model ``root``."""
    loc = tuple(error["loc"])
    where = _dotted((*prefix, *loc))
    if error["type"] == "extra_forbidden":
        _, parent = _walk(root, loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        near = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean `{_dotted((*prefix, *loc[:-1], near[0]))}`?" if near else ""
        return f"unknown parameter `{where}`{hint}"
    info, _ = _walk(root, loc)
    need = info.description if info is not None and info.description else error["msg"].lower()
    if error["type"] == "missing":
        return f"`{where}` is missing ({need})"
    if error["type"] == "value_error":  # the project's own validators say what the value must be
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        if isinstance(error["input"], Mapping):
            return f"`{where}`: {message}"
        return f"`{where}` = {error['input']!r}: {message}"
    return f"`{where}` = {error['input']!r}: must be {need}"


def _adapter(info: FieldInfo) -> TypeAdapter[Any]:
    """A validator of one top-level setting alone: its own model's, or strict like :class:`RunSettings`'."""
    annotated = Annotated[info.annotation, info]
    if _model_in(info.annotation) is not None:
        return TypeAdapter(annotated)
    return TypeAdapter(annotated, config=ConfigDict(strict=True))


def _groups(params: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """Each top-level setting of :class:`RunSettings` validated on its own: the valid ones, typed."""
    fields = RunSettings.model_fields
    for key in params:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            problems.append(f"unknown parameter `{key}`" + (f"; did you mean `{near[0]}`?" if near else ""))
    groups = {}
    for name, info in fields.items():
        if name not in params:
            problems.append(f"`{name}` is missing ({info.description or 'see conf/base'})")
        elif name == "models" and isinstance(params[name], str):
            value = params[name]
            problems.append(f"`models` = {value!r} is a string, not a list: write `models: [{value}]` in YAML, or "
                            f"`--params \"models=[{value}]\"` on the command line (with the brackets)")
        else:
            try:
                groups[name] = _adapter(info).validate_python(params[name])
            except ValidationError as error:
                problems += [describe({**detail, "loc": (name, *detail["loc"])}, RunSettings, ())
                             for detail in error.errors()]
    return groups


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


def _section_problems(sections: Mapping[str, Any], tasks: Sequence[Task]) -> list[str]:
    """Each task section of ``data_generation`` validated by its task's own settings model (the run's tasks
    and every built-in one); a section no task reads is a typo."""
    known = {name: load_task(name) for name in BUILT_IN} | {task.name: task for task in tasks}
    problems = []
    for name, section in sections.items():
        if name == "seed":
            continue
        if name not in known:
            near = difflib.get_close_matches(str(name), list(known), n=1)
            problems.append(f"unknown parameter `data_generation.{name}`"
                            + (f"; did you mean `data_generation.{near[0]}`?" if near else ""))
            continue
        try:
            known[name].read_settings(section if isinstance(section, Mapping) else {})
        except ValidationError as error:
            problems += [describe(detail, known[name].settings, ("data_generation", name))
                         for detail in error.errors()]
    return problems


def _model_problems(models: Sequence[str], settings: dict[str, Any]) -> list[str]:
    if len(set(models)) != len(models):
        return [f"`models` lists a model twice: {list(models)}"]
    if "model_registry" not in settings:
        return []
    problems = []
    for model_id in models:
        try:
            spec = ModelSpec.from_registry(model_id, settings["model_registry"])
            if spec.source == "gguf":  # its packages are on this machine or not: a cheap look, no weights read
                check_available(spec)
        except (ModelConfigError, ModelUnavailableError) as error:
            problems.append(str(error))
    return problems


def _device_problems(settings: dict[str, Any]) -> list[str]:
    runtime = settings.get("runtime")
    if runtime is None:
        return []
    problems = execution.cluster_problems(runtime)
    remote = runtime.cluster is not None and runtime.cluster != execution.LOCAL  # checked when it connects
    if runtime.device.startswith("cuda") and not remote and not torch.cuda.is_available():
        problems.append(f"`runtime.device` = {runtime.device!r} but torch sees no CUDA device here (torch "
                        f"{torch.__version__}): use `runtime.device=auto` (CUDA when present, else CPU) or `cpu`")
    return problems


def _hero_problems(settings: dict[str, Any]) -> list[str]:
    if not {"hero_heads", "models", "model_registry"} <= set(settings):
        return []
    registry, models = settings["model_registry"], settings["models"]
    problems = []
    for model_id, heads in settings["hero_heads"].named.items():
        if model_id.split("@")[0] not in registry:
            near = difflib.get_close_matches(model_id, list(registry), n=1)
            problems.append(f"`hero_heads.named` names unknown model {model_id!r}"
                            + (f"; did you mean {near[0]!r}?" if near else ""))
        elif model_id not in models:
            logger.warning("hero_heads.named lists heads of %s, which is not among this run's models %s: they "
                           "will NOT be studied.", model_id, list(models))
        for label in heads:
            try:
                parse_head(label)
            except ValueError as error:
                problems.append(f"`hero_heads.named.{model_id}`: {error}")
    return problems


def _quantisation_problems(settings: dict[str, Any]) -> list[str]:
    if not {"quantisation", "models"} <= set(settings) or settings["quantisation"].models is None:
        return []
    outside = [m for m in settings["quantisation"].models if m not in settings["models"]]
    if not outside:
        return []
    return [f"`quantisation.models` names {', '.join(map(repr, outside))}, not among this run's models "
            f"{list(settings['models'])}: re-quantise models the run measures, or add them to `models`"]


def settings_problems(params: Mapping[str, Any]) -> list[str]:
    """Every problem of a run's parameters, as Kedro read them (empty when the run can start)."""
    problems: list[str] = []
    settings = _groups(params, problems)
    pair = params.get("categorisation", {}).get("pair") if isinstance(params.get("categorisation"), Mapping) else None
    task_problems, tasks = _task_problems(params.get("tasks"), pair)
    problems += task_problems
    sections = params.get("data_generation")
    if isinstance(sections, Mapping):
        problems += _section_problems(sections, tasks)
    if "models" in settings:
        problems += _model_problems(settings["models"], settings)
    problems += _device_problems(settings)
    problems += _hero_problems(settings)
    problems += _quantisation_problems(settings)
    return problems


def validate_settings(params: Mapping[str, Any]) -> RunSettings:
    """The run's settings, typed; :class:`SettingsError` lists every problem, before any heavy work starts."""
    problems = settings_problems(params)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        hint = ("\nA model of your own belongs under `model_registry` in conf/local/parameters.yml (docs/models.md, "
                "\"Adding a model\")." if any("model_registry" in problem for problem in problems) else "")
        raise SettingsError(f"The run's settings have {len(problems)} problem(s); nothing was run:\n{listed}{hint}")
    return RunSettings.model_validate(params)


def check_named_hero_grids(settings: RunSettings) -> None:
    """Named hero heads of the run's models lie inside each model's grid, read from its config (no
    weights loaded; only models with named heads are read, so the default run pays nothing)."""
    named = {model: heads for model, heads in settings.hero_heads.named.items() if model in settings.models}
    grids = {model: model_grid(ModelSpec.from_registry(model, settings.model_registry)) for model in named}
    check_named_heads(named, grids)


def project_settings(conf_source: Path, env: str | None = None) -> RunSettings:
    """A project's settings as ``kedro run --env <env>`` reads them, validated and typed (for scripts,
    benchmarks and notebooks that call the library without a Kedro session)."""
    loader = OmegaConfigLoader(str(conf_source), **CONFIG_LOADER_ARGS, env=env)
    return validate_settings(loader["parameters"])
