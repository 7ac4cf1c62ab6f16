"""A task of one's own: subject-verb agreement ("The keys near the door" -> " are", not " is").

Run it beside the paper's pair with ``tasks: [ioi, anti, agreement_task:agreement]`` in a run config
file (docs/tasks.md, "Writing a task"), this folder on ``PYTHONPATH``. Its settings live under
``data_generation.agreement`` and are declared by :class:`AgreementSettings` (here: ``n_pool``, optional:
a task of one's own has no section in conf/base, so its model may give defaults).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import pandas as pd

from ioi_anti.params import Settings, need
from ioi_anti.tasks import Task, Tokenizers
from ioi_anti.tasks.prompts import filter_words, numbered

NOUNS = {"key": "keys", "dog": "dogs", "book": "books", "car": "cars", "tree": "trees", "bird": "birds",
         "house": "houses", "friend": "friends", "girl": "girls", "boy": "boys", "door": "doors", "cup": "cups"}
TEMPLATES = ["The {noun} near the window", "The {noun} of the old man"]


class AgreementSettings(Settings):
    """``data_generation.agreement``: the extra plural prompts per template, for mean ablation only."""

    n_pool: Annotated[int, need("an integer >= 0 (extra plural prompts per template)", ge=0)] = 4


def make_prompts(settings: AgreementSettings, tokenizers: Tokenizers, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plural subjects (clean: " are" should win over " is") and the same sentence with the singular (ref)."""
    singular, dropped = filter_words(list(NOUNS), tokenizers, "singular")
    plural, dropped_plural = filter_words(list(NOUNS.values()), tokenizers, "plural")
    nouns = [n for n in singular if NOUNS[n] in plural]  # one token each: one length per template
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    pair = 0
    for tid, template in enumerate(TEMPLATES):
        for noun in nouns:
            for role, word in (("clean", NOUNS[noun]), ("ref", noun)):
                rows.append({"role": role, "pair_id": pair, "template_id": tid, "text": template.format(noun=word),
                             "context_words": [word], "metric_words": ["are", "is"], "metric_weights": [1.0, -1.0]})
            pair += 1
        for noun in rng.choice(nouns, size=settings.n_pool):  # extra plural prompts for mean ablation
            rows.append({"role": "pool", "pair_id": -1, "template_id": tid, "text": template.format(noun=NOUNS[noun]),
                         "context_words": [NOUNS[noun]], "metric_words": ["are", "is"], "metric_weights": [1.0, -1.0]})
    return numbered(rows), pd.DataFrame(dropped + dropped_plural, columns=["list", "word", "tokenizer"])


agreement = Task(name="agreement", label="subject-verb agreement", short="agreement", colour="#56B4E9",
                 make_prompts=make_prompts, settings=AgreementSettings, ablation_roles=("clean", "pool"),
                 description="logit(are) − logit(is) after a plural subject; reference: the singular subject")
