"""The study's published IOI prompt form (data/01_raw/published/SOURCE.md): "When {A} and {B} went to the
store, {A} gave a gift to" -> " {B}", one template, two different names from the published list.

Metric ``logit(B) - logit(A)`` at END, as published. The published protocol has no reference set (its Δ is
the raw change of this logit difference); the reference here, used only for the gap the report shows and
for mean ablation values, is the ABC prompt: the second mention of A replaced by a third name C, so that
the sentence no longer says who receives the gift. :func:`name_choice_prompts` makes the prompts of every
published form (this one and :mod:`ioi_anti.tasks.paper_anti`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import field_validator

from ioi_anti.params import Count, Names, Settings, Size, need
from ioi_anti.tasks import Task, Tokenizers
from ioi_anti.tasks.prompts import clean_and_pool, numbered, word_lists

SLOT = re.compile(r"\{([ABC])\}")
TEMPLATE = "a template naming {A} twice and {B} once (answer B, distractor A)"


class NameChoiceSettings(Settings):
    """``data_generation.paper_ioi`` and ``data_generation.paper_anti``: a published name-choice form, how many
    prompts, and the names it is filled with."""

    template: Annotated[str, need(TEMPLATE)]
    n_prompts: Count
    mean_pool_per_template: Size
    min_names: Names
    names: list[str]

    @field_validator("template")
    @classmethod
    def _two_a_one_b(cls, template: str) -> str:
        slots = SLOT.findall(template)
        if slots.count("A") != 2 or slots.count("B") != 1:
            raise ValueError(f"must be {TEMPLATE}")
        return template


def name_choice_prompts(settings: NameChoiceSettings, tokenizers: Tokenizers,
                        seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prompts of a published name-choice form (``settings.template`` with slots {A} and {B}; the answer
    is B, the distractor A), their ABC references and the mean-ablation pool, from the names of
    ``settings.names`` that are single tokens in every tokenizer of the run (the drop log says which
    are not)."""
    template = settings.template
    vocab, dropped = word_lists(settings, tokenizers, {"names": "min_names"})
    rng = np.random.default_rng(seed)
    second_a = [m.start() for m in SLOT.finditer(template) if m.group(1) == "A"][1]
    reference = template[:second_a] + "{C}" + template[second_a + len("{A}"):]
    rows: list[dict[str, Any]] = []

    def add(role: str, pair: int, tid: int) -> None:
        a, b, c = rng.choice(vocab["names"], size=3, replace=False)
        for r in ["clean", "ref"] if role == "clean" else [role]:
            text = (template if r == "clean" else reference).format(A=a, B=b, C=c)
            rows.append({"role": r, "pair_id": pair, "template_id": tid, "text": text,
                         "context_words": [a, b] if r == "clean" else [a, b, c],
                         "metric_words": [b, a], "metric_weights": [1.0, -1.0]})

    clean_and_pool(add, settings.n_prompts, 1, settings.mean_pool_per_template)
    return numbered(rows), dropped


TASK = Task(name="paper_ioi", label="published IOI", short="IOI", colour="#0072B2",
            make_prompts=name_choice_prompts, settings=NameChoiceSettings, ablation_roles=("ref", "pool"),
            description="the published IOI form 'When A and B went to the store, A gave a gift to': "
                        "logit(B) − logit(A); reference: a third name for the second A")
