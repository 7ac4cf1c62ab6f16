"""Anti-repetition: "Here is a list of different things: horse, dog, duck," -> an animal not yet listed.

Metric: the mean logit of the category's items not in the list minus the mean logit of those in it,
at END. Reference: the matched copy prompt ("Say it twice: horse, dog, duck. Say it twice: horse,
dog,"), the same items where repeating is right. Ablation values: the non-copy prompts of the same
template (clean and pool prompts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ioi_anti.tasks import Task, Tokenizers
from ioi_anti.tasks.prompts import filter_words, numbered, require_words

logger = logging.getLogger(__name__)


def categories(params: Mapping[str, Any], tokenizers: Tokenizers) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """The categories whose single-token items (in every tokenizer) are enough for the longest list."""
    kept_categories: dict[str, list[str]] = {}
    drops: list[dict[str, str]] = []
    for category, items in params["categories"].items():
        kept, dropped = filter_words(items, tokenizers, f"category:{category}")
        drops += dropped
        if len(kept) >= params["min_items_per_category"]:
            kept_categories[category] = kept
        else:
            logger.warning("Category %r dropped: %d single-token items left, %d needed.",
                           category, len(kept), params["min_items_per_category"])
    require_words(list(kept_categories), params["min_categories"], "anti-repetition categories", tokenizers)
    return kept_categories, pd.DataFrame(drops, columns=["list", "word", "tokenizer"])


def make_dataset(pools: Mapping[str, list[str]], params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    """Non-copy list prompts, their matched copy prompts and the mean-ablation pool (seeded)."""
    if params["n_prompts"] < 1:
        raise ValueError("data_generation.anti.n_prompts must be at least 1.")
    noncopy, copy = params["noncopy_phrasings"], params["copy_phrasings"]
    if len(noncopy) != len(copy):
        raise ValueError("noncopy_phrasings and copy_phrasings must pair up one to one.")
    rng = np.random.default_rng(seed + 1)  # the stream anti-repetition has always used, kept for its prompts
    names = sorted(pools)
    templates = [(p, n) for p in range(len(noncopy)) for n in params["list_lengths"]]
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

    for pair in range(params["n_prompts"]):
        add("clean", pair, pair % len(templates), names[(pair // len(templates)) % len(names)])
    for tid in range(len(templates)):
        for k in range(params["mean_pool_per_template"]):
            add("pool", -1, tid, names[k % len(names)])
    return numbered(rows)


def make_prompts(params: Mapping[str, Any], tokenizers: Tokenizers, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Categories with enough single-token items for every model of the run, then the prompts."""
    pools, dropped = categories(params, tokenizers)
    return make_dataset(pools, params, seed), dropped


def attention_targets(input_ids: Sequence[int], tokens: Sequence[int],
                      weights: Sequence[float]) -> dict[str, list[int]]:
    """Positions of the in-context list items (the metric tokens of negative weight), END excluded: all of them
    and the last one."""
    listed = {t for t, w in zip(tokens, weights, strict=True) if w < 0}
    positions = [i for i, t in enumerate(list(input_ids)[:-1]) if t in listed]
    return {"all list items": positions, "last list item": positions[-1:]}


TASK = Task(name="anti", label="anti-repetition", short="anti", colour="#D55E00", make_prompts=make_prompts,
            ablation_roles=("clean", "pool"), attention_targets=attention_targets,
            description="anti-repetition: mean logit of new items − mean logit of listed items; reference: "
                        "matched copy prompts")
