"""Indirect Object Identification (Wang et al., 2022): "Then, Mary and John went to the store. John
gave a drink to" -> " Mary".

Metric ``logit(IO) - logit(S)`` at END. Reference: the ABC prompt, where the second mention of S is a
third name C, so that the sentence no longer says who the indirect object is. Ablation values: the
ABC prompts of the same template (reference and pool prompts). Templates come in BABA and ABBA
order (each BABA template of ``data_generation.ioi.baba_templates`` and its mirror).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import field_validator

from ioi_anti.params import Count, Settings, Size, need
from ioi_anti.tasks import Task, Tokenizers
from ioi_anti.tasks.prompts import clean_and_pool, numbered, word_lists

NAME_SLOT = re.compile(r"\[(A|B)\]")
TEMPLATES = "a non-empty list of BABA templates, each naming [B], [A], [B] in that order"


class IoiSettings(Settings):
    """``data_generation.ioi``: how many prompts, the BABA templates and the word lists they are filled from."""

    n_prompts: Count
    mean_pool_per_template: Size
    min_names: Annotated[int, need("an integer >= 3 (an IOI prompt and its ABC reference need three different "
                                   "names)", ge=3)]
    min_places: Count
    min_objects: Count
    baba_templates: Annotated[list[str], need(TEMPLATES, min_length=1)]
    names: list[str]
    places: list[str]
    objects: list[str]

    @field_validator("baba_templates")
    @classmethod
    def _name_slots_in_order(cls, templates: list[str]) -> list[str]:
        for index, text in enumerate(templates):
            if NAME_SLOT.findall(text) != ["B", "A", "B"]:
                raise ValueError(f"must be {TEMPLATES}; template {index} is not: {text!r}")
        return templates


def ioi_templates(baba: Sequence[str]) -> list[dict[str, Any]]:
    """The BABA templates (slots checked by :class:`IoiSettings`) and their ABBA mirrors, each with its
    name-slot order."""
    templates = []
    for text in baba:
        templates.append({"template": text, "kind": "BABA", "order": ("S", "IO", "S")})
        templates.append({"template": text, "kind": "ABBA", "order": ("IO", "S", "S")})
    return templates


def _fill(template: str, names: Sequence[str], place: str, obj: str) -> str:
    parts = NAME_SLOT.split(template)  # text, slot, text, slot, text, slot, text
    text = parts[0] + names[0] + parts[2] + names[1] + parts[4] + names[2] + parts[6]
    return text.replace("[PLACE]", place).replace("[OBJECT]", obj)


def make_dataset(vocab: Mapping[str, Sequence[str]], settings: IoiSettings, seed: int) -> pd.DataFrame:
    """Clean IOI prompts, their ABC references and the mean-ablation pool (seeded)."""
    rng = np.random.default_rng(seed)
    templates = ioi_templates(settings.baba_templates)
    rows: list[dict[str, Any]] = []

    def add(role: str, pair: int, tid: int) -> None:
        spec = templates[tid]
        io, s, c = rng.choice(vocab["names"], size=3, replace=False)
        place, obj = rng.choice(vocab["places"]), rng.choice(vocab["objects"])
        clean_names = [io if slot == "IO" else s for slot in spec["order"]]
        for r in ["clean", "ref"] if role == "clean" else [role]:
            names = clean_names if r == "clean" else clean_names[:2] + [c]
            rows.append({
                "role": r, "pair_id": pair, "template_id": tid, "template_kind": spec["kind"],
                "text": _fill(spec["template"], names, place, obj), "context_words": names,
                "metric_words": [io, s], "metric_weights": [1.0, -1.0],
                "io": io, "s": s, "c": c if r != "clean" else None,
            })

    clean_and_pool(add, settings.n_prompts, len(templates), settings.mean_pool_per_template)
    return numbered(rows)


def make_prompts(settings: IoiSettings, tokenizers: Tokenizers, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Names, places and objects that are single tokens for every model of the run, then the prompts."""
    vocab, dropped = word_lists(settings, tokenizers, {"names": "min_names", "places": "min_places",
                                                       "objects": "min_objects"})
    return make_dataset(vocab, settings, seed), dropped


def attention_targets(input_ids: Sequence[int], tokens: Sequence[int],
                      weights: Sequence[float]) -> dict[str, list[int]]:
    """Positions of IO (the first metric token), S1 and S2 (the second) in an IOI prompt, END excluded."""
    ids = list(input_ids)[:-1]
    s_pos = [i for i, t in enumerate(ids) if t == tokens[1]]
    return {"IO": [ids.index(tokens[0])], "S1": [s_pos[0]], "S2": [s_pos[-1]]}


TASK = Task(name="ioi", label="IOI", short="IOI", colour="#0072B2", make_prompts=make_prompts,
            settings=IoiSettings, ablation_roles=("ref", "pool"), attention_targets=attention_targets,
            description="indirect object identification: logit(IO) − logit(S); reference: ABC prompts")
