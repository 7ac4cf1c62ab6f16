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
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ioi_anti.tasks import Task, Tokenizers
from ioi_anti.tasks.prompts import clean_and_pool, numbered, word_lists

SLOT = re.compile(r"\{([ABC])\}")


def name_choice_prompts(params: Mapping[str, Any], tokenizers: Tokenizers,
                        seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prompts of a published name-choice form (``params["template"]`` with slots {A} and {B}; the answer
    is B, the distractor A), their ABC references and the mean-ablation pool, from the names of
    ``params["names"]`` that are single tokens in every tokenizer of the run (the drop log says which
    are not)."""
    template = str(params["template"])
    if SLOT.findall(template).count("A") != 2 or SLOT.findall(template).count("B") != 1:
        raise ValueError(f"A published name-choice template names {{A}} twice and {{B}} once: {template!r}.")
    if params["n_prompts"] < 1:
        raise ValueError("n_prompts of a published task must be at least 1.")
    vocab, dropped = word_lists(params, tokenizers, {"names": "min_names"})
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

    clean_and_pool(add, int(params["n_prompts"]), 1, int(params["mean_pool_per_template"]))
    return numbered(rows), dropped


TASK = Task(name="paper_ioi", label="published IOI", short="IOI", colour="#0072B2",
            make_prompts=name_choice_prompts, ablation_roles=("ref", "pool"),
            description="the published IOI form 'When A and B went to the store, A gave a gift to': "
                        "logit(B) − logit(A); reference: a third name for the second A")
