"""Tasks: the behaviours whose heads are measured, each one module.

A task is everything the measurement needs to know about a behaviour, and nothing else in the
package names a task: its name (the ``task`` column of every table, the ``delta_<name>`` columns of
the per-head table), how it is called in figures and text, its prompt generator, and which prompts
give its ablation values. The metric is common to all: a weighted sum of candidate logits at the
last token (:mod:`ioi_anti.measure.metrics`), so a task states its candidates and weights per prompt.

A task declares the settings it reads, its section ``data_generation.<name>``, as a pydantic model
(:class:`ioi_anti.params.Settings`): :meth:`Task.read_settings` validates the section into it, and the
prompt generator receives that typed object. A prompt generator returns a table with one row per prompt
and at least the columns of :data:`PROMPT_COLUMNS` (``task`` is added from the task's name):

* ``prompt_id``: 0..n-1 (:func:`ioi_anti.tasks.prompts.numbered` numbers a list of rows);
* ``role``: ``clean`` (the prompts whose heads are measured), ``ref`` (one per clean prompt, same
  ``pair_id``: the reference that defines the task's gap, ``gap = mean(m_clean - m_ref)``) or ``pool``
  (extra prompts used only for ablation values, ``pair_id`` -1);
* ``template_id``: prompts of one template share their token length, so mean and resample ablation
  values are taken position by position over a template's prompts of the roles ``ablation_roles``;
* ``text``; ``context_words``: words that must appear in the prompt as single tokens (checked when it
  is tokenised); ``metric_words`` and ``metric_weights``: the candidates (each ``" " + word`` a single
  token in every tokenizer of the run) and their weights.

Built in: ``ioi``, ``anti`` (the paper's pair), ``induction``, ``factual``, and ``paper_ioi`` and
``paper_anti``, the published study's own prompt forms (``--env paper_protocol``). A task of one's own is
a :class:`Task` object named by import path, ``my_package.my_module:my_task`` (docs/tasks.md, "Writing a task").
"""

from __future__ import annotations

import importlib
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ioi_anti.params import DataGeneration, Settings

if TYPE_CHECKING:  # only for annotations: loading transformers takes seconds, and tables do not need it
    from transformers import PreTrainedTokenizerBase

PROMPT_COLUMNS = ("prompt_id", "role", "pair_id", "template_id", "text", "context_words", "metric_words",
                  "metric_weights")
ROLES = ("clean", "ref", "pool")
BUILT_IN = ("ioi", "anti", "induction", "factual", "paper_ioi", "paper_anti")
PAIR = ("ioi", "anti")  # the paper's pair: the default run's tasks and categorisation.pair
NAME = re.compile(r"[a-z][a-z0-9_]*")

Tokenizers = Mapping[str, "PreTrainedTokenizerBase"]
PromptMaker = Callable[[Any, Tokenizers, int], tuple[pd.DataFrame, pd.DataFrame]]
"""``(settings, tokenizers, seed) -> (prompts, dropped words)``: the task's section of ``data_generation`` as
an instance of its :attr:`Task.settings` model (typed ``Any`` here because each task takes its own model),
the run's tokenizers by model id and the prompt seed; the drop log has columns list, word, tokenizer."""
AttentionTargets = Callable[[Sequence[int], Sequence[int], Sequence[float]], dict[str, list[int]]]
"""``(a clean prompt's input ids, its metric token ids, their weights) -> positions by target name``: where
a hero head's attention from END is read (summed over each target's positions), e.g. IOI's IO, S1, S2."""
HeadScorer = Callable[[Any, pd.DataFrame, int], pd.DataFrame]
"""``(loaded model, the task's tokenised prompts, max batch) -> (layer, head, score)``: a per-head
measurement the task reports beside its Δ (e.g. induction's attention score)."""


class TaskError(ValueError):
    """A task that cannot be loaded or used; the message says which and what to do."""


@dataclass(frozen=True)
class Task:
    """One behaviour: what the pipelines need to measure every head's part in it.

    ``settings`` is the pydantic model of the task's section of ``data_generation`` (``make_prompts``
    receives an instance); ``short`` names the task inside category names ("IOI-only"); ``score``
    (optional) is a per-head measurement reported beside Δ in the per-head table as ``<score_name>``;
    ``attention_targets`` (optional) the token positions whose attention from END the hero-head study
    reports.
    """

    name: str
    label: str
    short: str
    colour: str
    make_prompts: PromptMaker
    settings: type[Settings]
    ablation_roles: tuple[str, ...] = ("clean", "pool")
    description: str = ""
    score: HeadScorer | None = field(default=None, compare=False)
    score_name: str = ""
    attention_targets: AttentionTargets | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise TaskError(f"Task name {self.name!r} must be lower-case letters, digits and underscores, "
                            "starting with a letter (it names the columns delta_<name>).")
        bad = set(self.ablation_roles) - set(ROLES)
        if not self.ablation_roles or bad:
            raise TaskError(f"Task {self.name}: ablation_roles must be a non-empty subset of {ROLES}; got "
                            f"{self.ablation_roles}.")
        if self.score is not None and not NAME.fullmatch(self.score_name):
            raise TaskError(f"Task {self.name}: a task with a score needs a score_name like 'induction_score'.")

    def read_settings(self, section: Mapping[str, Any]) -> Settings:
        """The task's section of ``data_generation`` validated into its :attr:`settings` model; a pydantic
        ValidationError when it is not (the run's settings check turns it into its message)."""
        return self.settings.model_validate(section)

    def prompts(self, settings: Settings, tokenizers: Tokenizers, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The task's prompt table (checked against :data:`PROMPT_COLUMNS`) and its dropped words, from its
        typed ``settings`` (:meth:`read_settings`)."""
        table, dropped = self.make_prompts(settings, tokenizers, seed)
        check_prompts(self.name, table)
        table.insert(1, "task", self.name)
        return table, dropped.assign(task=self.name)


def check_prompts(name: str, table: pd.DataFrame) -> None:
    """A task's prompt table has the columns and roles the pipelines rely on, or a clear error."""
    missing = [c for c in PROMPT_COLUMNS if c not in table.columns]
    if missing:
        raise TaskError(f"Task {name}: its prompt table lacks column(s) {missing} (see ioi_anti.tasks).")
    roles = set(table["role"])
    if not roles <= set(ROLES) or "clean" not in roles or "ref" not in roles:
        raise TaskError(f"Task {name}: prompt roles must include clean and ref and be among {ROLES}; got "
                        f"{sorted(roles)}.")
    clean = table.loc[table["role"] == "clean", "pair_id"]
    ref = table.loc[table["role"] == "ref", "pair_id"]
    if clean.duplicated().any() or sorted(clean) != sorted(ref):
        raise TaskError(f"Task {name}: every clean prompt needs exactly one ref prompt with its pair_id.")
    uneven = table[table["metric_words"].map(len) != table["metric_weights"].map(len)]
    if not uneven.empty:
        raise TaskError(f"Task {name}: {len(uneven)} prompt(s) have a different number of metric words and "
                        f"weights, e.g. {uneven['text'].iloc[0]!r}.")


def load_task(name: str) -> Task:
    """A built-in task by name, or a user's task by import path ``package.module:attribute``."""
    if name in BUILT_IN:
        return importlib.import_module(f"ioi_anti.tasks.{name}").TASK
    if ":" not in name:
        raise TaskError(f"Unknown task {name!r}: built-in tasks are {', '.join(BUILT_IN)}; a task of your own "
                        "is named by import path, e.g. my_package.my_module:my_task.")
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TaskError(f"Task {name!r}: cannot import {module_name!r} ({error}); is its package installed "
                        "or on PYTHONPATH?") from error
    task = getattr(module, attribute, None)
    if not isinstance(task, Task):
        raise TaskError(f"Task {name!r}: {module_name}.{attribute} is "
                        f"{'missing' if task is None else type(task).__name__}, not an ioi_anti.tasks.Task.")
    return task


def load_tasks(names: Sequence[str]) -> list[Task]:
    """The run's tasks (``tasks`` in the parameters), in order: at least two, with distinct names."""
    if isinstance(names, str) or len(names) < 2:
        raise TaskError(f"`tasks` must list at least two tasks (head roles compare tasks); got {names!r}.")
    tasks = [load_task(str(name)) for name in names]
    seen = [task.name for task in tasks]
    if len(set(seen)) != len(seen):
        raise TaskError(f"`tasks` names the same task twice: {seen}.")
    return tasks


def make_task_prompts(names: Sequence[str], data_generation: DataGeneration, tokenizers: Tokenizers,
                      seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prompts of the tasks ``names`` (built-in names or import paths, as in ``tasks``) as one table
    (``prompt_id`` unique within a task) and their drop log; each task gets its own section of
    ``data_generation``, read into its settings model, and the prompt seed."""
    tables, drops = [], []
    for task in load_tasks(names):
        settings = task.read_settings(data_generation.section(task.name))
        table, dropped = task.prompts(settings, tokenizers, seed)
        tables.append(table)
        drops.append(dropped)
    return pd.concat(tables, ignore_index=True), pd.concat(drops, ignore_index=True)


def seed_for(seed: int, name: str) -> int:
    """A task's own random stream from the run's prompt seed, so that adding a task to a run changes no
    other task's prompts (IOI and anti-repetition keep the streams they have always used)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63
