"""Anti-repetition: "Here is a list of different things: horse, dog, duck," -> an animal not yet listed.

Metric: the mean logit of the category's items not in the list minus the mean logit of those in it,
at END. Reference: the matched copy prompt ("Say it twice: horse, dog, duck. Say it twice: horse,
dog,"), the same items where repeating is right. Ablation values: the non-copy prompts of the same
template (clean and pool prompts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import ValidationInfo, field_validator

from ioi_anti.params import Count, Settings, Size, need
from ioi_anti.tasks import Task, Tokenizers
from ioi_anti.tasks.prompts import filter_words, numbered, require_words

logger = logging.getLogger(__name__)
NEW_ITEM = "larger than the longest list, so that some item of the category is left to be new"
COPIES = "a list of copy phrasings pairing up one to one with noncopy_phrasings"


class AntiSettings(Settings):
    """``data_generation.anti``: how many prompts, the list lengths, the phrasings and the categories of items."""

    n_prompts: Count
    mean_pool_per_template: Size
    list_lengths: Annotated[list[Annotated[int, need("an integer >= 2", ge=2)]],
                            need("a non-empty list of integers >= 2", min_length=1)]
    min_items_per_category: Annotated[int, need(f"an integer {NEW_ITEM}")]
    min_categories: Count
    noncopy_phrasings: Annotated[list[str], need("a non-empty list of phrasings holding {items}", min_length=1)]
    copy_phrasings: Annotated[list[str], need(COPIES)]
    categories: dict[str, list[str]]

    @field_validator("min_items_per_category")
    @classmethod
    def _leaves_a_new_item(cls, value: int, info: ValidationInfo) -> int:
        lengths = info.data.get("list_lengths")  # absent when list_lengths itself is wrong
        if lengths and value <= max(lengths):
            raise ValueError(f"must be {NEW_ITEM}")
        return value

    @field_validator("copy_phrasings")
    @classmethod
    def _copies_pair_up(cls, phrasings: list[str], info: ValidationInfo) -> list[str]:
        noncopy = info.data.get("noncopy_phrasings")  # absent when noncopy_phrasings itself is wrong
        if noncopy is not None and len(phrasings) != len(noncopy):
            raise ValueError(f"must be {COPIES} ({len(noncopy)} of those, {len(phrasings)} copy phrasings)")
        return phrasings


def categories(settings: AntiSettings, tokenizers: Tokenizers) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """The categories whose single-token items (in every tokenizer) are enough for the longest list."""
    kept_categories: dict[str, list[str]] = {}
    drops: list[dict[str, str]] = []
    for category, items in settings.categories.items():
        kept, dropped = filter_words(items, tokenizers, f"category:{category}")
        drops += dropped
        if len(kept) >= settings.min_items_per_category:
            kept_categories[category] = kept
        else:
            logger.warning("Category %r dropped: %d single-token items left, %d needed.",
                           category, len(kept), settings.min_items_per_category)
    require_words(list(kept_categories), settings.min_categories, "anti-repetition categories", tokenizers)
    return kept_categories, pd.DataFrame(drops, columns=["list", "word", "tokenizer"])


def make_dataset(pools: Mapping[str, list[str]], settings: AntiSettings, seed: int) -> pd.DataFrame:
    """Non-copy list prompts, their matched copy prompts and the mean-ablation pool (seeded)."""
    noncopy, copy = settings.noncopy_phrasings, settings.copy_phrasings
    rng = np.random.default_rng(seed + 1)  # the stream anti-repetition has always used, kept for its prompts
    names = sorted(pools)
    templates = [(p, n) for p in range(len(noncopy)) for n in settings.list_lengths]
    rows: list[dict[str, Any]] = []

    def add(role: str, pair: int, tid: int, category: str) -> None:
        phrasing, length = templates[tid]
        pool = pools[category]
        items = list(rng.choice(pool, size=length, replace=False))
        weights = [-1.0 / length if w in items else 1.0 / (len(pool) - length) for w in pool]
        texts = {
            "clean": noncopy[phrasing].format(items=", ".join(items)),
            "ref": copy[phrasing].format(items=", ".join(items), head=", ".join(items[:-1])),
        }
        for r in ["clean", "ref"] if role == "clean" else ["pool"]:
            rows.append({
                "role": r, "pair_id": pair, "template_id": tid, "template_kind": f"phrasing{phrasing}_len{length}",
                "text": texts["clean" if r == "pool" else r], "context_words": items,
                "metric_words": list(pool), "metric_weights": weights, "category": category,
            })

    for pair in range(settings.n_prompts):
        add("clean", pair, pair % len(templates), names[(pair // len(templates)) % len(names)])
    for tid in range(len(templates)):
        for k in range(settings.mean_pool_per_template):
            add("pool", -1, tid, names[k % len(names)])
    return numbered(rows)


def make_prompts(settings: AntiSettings, tokenizers: Tokenizers, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Categories with enough single-token items for every model of the run, then the prompts."""
    pools, dropped = categories(settings, tokenizers)
    return make_dataset(pools, settings, seed), dropped


def attention_targets(input_ids: Sequence[int], tokens: Sequence[int],
                      weights: Sequence[float]) -> dict[str, list[int]]:
    """Positions of the in-context list items (the metric tokens of negative weight), END excluded: all of them
    and the last one."""
    listed = {t for t, w in zip(tokens, weights, strict=True) if w < 0}
    positions = [i for i, t in enumerate(list(input_ids)[:-1]) if t in listed]
    return {"all list items": positions, "last list item": positions[-1:]}


TASK = Task(name="anti", label="anti-repetition", short="anti", colour="#D55E00", make_prompts=make_prompts,
            settings=AntiSettings, ablation_roles=("clean", "pool"), attention_targets=attention_targets,
            description="anti-repetition: mean logit of new items − mean logit of listed items; reference: "
                        "matched copy prompts")
