"""Factual recall: "The capital of France is the city of" -> " Paris".

Facts are (subject, answer) pairs of one kind (capitals, by default) whose subject and answer are single
tokens in every tokenizer of the run, so every model sees the same prompts. Metric at END: logit(right
answer) minus the mean logit of the other facts' answers. Reference: the same sentence about
``reference_subject`` ("this country"), which no longer says which answer is right. Ablation values: clean
and pool prompts of the same template (one subject token each, so one token length per template).
Facts a model gets wrong at baseline stay in (every model sees the same prompts); the baseline table
counts them (``n_wrong``) and the report says how many.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import field_validator

from ioi_anti.params import Count, Settings, Size, need
from ioi_anti.tasks import Task, Tokenizers, seed_for
from ioi_anti.tasks.prompts import filter_words, numbered, require_words

TEMPLATES = "a non-empty list of templates, each holding {subject} once"


class FactualSettings(Settings):
    """``data_generation.factual``: how many prompts, the templates, the reference subject and the facts."""

    n_prompts: Count
    mean_pool_per_template: Size
    min_facts: Annotated[int, need("an integer >= 2 (the right answer and at least one other)", ge=2)]
    reference_subject: str
    templates: Annotated[list[str], need(TEMPLATES, min_length=1)]
    facts: Annotated[dict[str, str], need("a map of subject to answer")]

    @field_validator("templates")
    @classmethod
    def _one_subject_each(cls, templates: list[str]) -> list[str]:
        if any(t.count("{subject}") != 1 for t in templates):
            raise ValueError(f"must be {TEMPLATES}")
        return templates


def known_facts(settings: FactualSettings, tokenizers: Tokenizers) -> tuple[dict[str, str], pd.DataFrame]:
    """The facts whose subject and answer are both single tokens in every tokenizer, and the drop log."""
    facts = settings.facts
    subjects, dropped_subjects = filter_words(list(facts), tokenizers, "subjects")
    answers, dropped_answers = filter_words(list(facts.values()), tokenizers, "answers")
    kept = {s: a for s, a in facts.items() if s in subjects and a in answers}
    require_words(list(kept), settings.min_facts, "facts (subject and answer)", tokenizers)
    return kept, pd.DataFrame(dropped_subjects + dropped_answers, columns=["list", "word", "tokenizer"])


def make_dataset(facts: Mapping[str, str], settings: FactualSettings, seed: int) -> pd.DataFrame:
    """Clean fact prompts, their uninformative-subject references and the ablation pool (seeded)."""
    templates = settings.templates
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(sorted(facts)))
    answers = [facts[s] for s in sorted(facts)]
    rows: list[dict[str, Any]] = []

    def add(role: str, pair: int, tid: int, subject: str) -> None:
        right = facts[subject]
        weights = [1.0 if a == right else -1.0 / (len(answers) - 1) for a in answers]
        for r in ["clean", "ref"] if role == "clean" else ["pool"]:
            about = settings.reference_subject if r == "ref" else subject
            rows.append({"role": r, "pair_id": pair, "template_id": tid, "template_kind": f"template{tid}",
                         "text": templates[tid].format(subject=about), "context_words": [] if r == "ref" else [subject],
                         "metric_words": answers, "metric_weights": weights, "subject": subject, "answer": right})

    for pair in range(settings.n_prompts):
        add("clean", pair, pair % len(templates), order[pair % len(order)])
    for tid in range(len(templates)):
        for subject in rng.choice(order, size=min(settings.mean_pool_per_template, len(order)), replace=False):
            add("pool", -1, tid, str(subject))
    return numbered(rows)


def make_prompts(settings: FactualSettings, tokenizers: Tokenizers,
                 seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Facts every model of the run can be asked about with single tokens, then the prompts."""
    facts, dropped = known_facts(settings, tokenizers)
    return make_dataset(facts, settings, seed_for(seed, "factual")), dropped


TASK = Task(name="factual", label="factual recall", short="factual", colour="#E69F00", make_prompts=make_prompts,
            settings=FactualSettings, ablation_roles=("clean", "pool"),
            description="factual recall: logit(right answer) − mean logit of the other facts' answers; reference: "
                        "the same sentence about an unnamed subject")
