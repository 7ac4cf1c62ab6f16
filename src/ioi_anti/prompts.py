"""IOI and anti-repetition prompt datasets, the single-token word filter, and tokenisation.

Both tasks share one table schema so that one metric and one ablation engine serve both:
every prompt row carries ``metric_words`` and ``metric_weights``, and the task metric is
``sum_k weight_k * logit(" " + word_k)`` read at the END token (the last token of the prompt).

* IOI: words ``[IO, S]``, weights ``[+1, -1]`` -> logit(IO) - logit(S).
* anti-repetition: words = the category's items; weight ``+1/n_new`` for items not in the
  list, ``-1/n_context`` for items in the list -> mean new-item logit - mean in-context logit.

``role`` is ``clean`` (the prompts whose heads are measured), ``ref`` (the paired reference
prompt: the ABC counterpart for IOI, the matched copy prompt for anti-repetition) or ``pool``
(extra prompts of the same templates, used only for mean / resample ablation values).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

NAME_SLOT = re.compile(r"\[(A|B)\]")


class VocabularyError(ValueError):
    """Too few single-token words remain for a tokenizer of the run."""


def is_single_token(word: str, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``" " + word`` is exactly one token (no special tokens added)."""
    return len(tokenizer(" " + word, add_special_tokens=False).input_ids) == 1


def filter_words(
    words: Sequence[str], tokenizers: Mapping[str, PreTrainedTokenizerBase], what: str
) -> tuple[list[str], list[dict[str, str]]]:
    """Keep the words that are single tokens in every tokenizer; report each drop."""
    kept, dropped = [], []
    for word in dict.fromkeys(words):
        bad = [name for name, tok in tokenizers.items() if not is_single_token(word, tok)]
        if bad:
            dropped.extend({"list": what, "word": word, "tokenizer": name} for name in bad)
        else:
            kept.append(word)
    return kept, dropped


def _require(kept: Sequence[str], needed: int, what: str, tokenizers: Mapping[str, Any]) -> None:
    if len(kept) < needed:
        raise VocabularyError(
            f"Only {len(kept)} {what} are single tokens in every tokenizer of the run "
            f"({', '.join(tokenizers)}); at least {needed} are needed. Add single-token words "
            "to conf/base/parameters_data_generation.yml or drop a model from the run."
        )


def build_vocabulary(
    params: Mapping[str, Any], tokenizers: Mapping[str, PreTrainedTokenizerBase]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Filter every word list once for the whole run; return the vocabulary and the drop log."""
    if not tokenizers:
        raise VocabularyError("No tokenizers given: the run has no models.")
    ioi, anti = params["ioi"], params["anti"]
    drops: list[dict[str, str]] = []
    vocab: dict[str, Any] = {"categories": {}}
    for key, minimum in (("names", "min_names"), ("places", "min_places"), ("objects", "min_objects")):
        kept, dropped = filter_words(ioi[key], tokenizers, key)
        drops += dropped
        _require(kept, ioi[minimum], key, tokenizers)
        vocab[key] = kept
    for category, items in anti["categories"].items():
        kept, dropped = filter_words(items, tokenizers, f"category:{category}")
        drops += dropped
        if len(kept) >= anti["min_items_per_category"]:
            vocab["categories"][category] = kept
        else:
            logger.warning(
                "Category %r dropped: %d single-token items left, %d needed.",
                category, len(kept), anti["min_items_per_category"],
            )
    _require(list(vocab["categories"]), anti["min_categories"], "anti-repetition categories", tokenizers)
    log = pd.DataFrame(drops, columns=["list", "word", "tokenizer"])
    for (name, what), group in log.groupby(["tokenizer", "list"]):
        logger.info("Tokenizer %s: dropped %d %s: %s", name, len(group), what, ", ".join(group["word"]))
    return vocab, log


def ioi_templates(baba: Sequence[str]) -> list[dict[str, Any]]:
    """The BABA templates and their ABBA mirrors, each with its name-slot order."""
    templates = []
    for index, text in enumerate(baba):
        slots = NAME_SLOT.findall(text)
        if slots != ["B", "A", "B"]:
            raise ValueError(f"IOI template {index} must name [B], [A], [B] in that order: {text!r}")
        templates.append({"template": text, "kind": "BABA", "order": ("S", "IO", "S")})
        templates.append({"template": text, "kind": "ABBA", "order": ("IO", "S", "S")})
    return templates


def _fill_ioi(template: str, names: Sequence[str], place: str, obj: str) -> str:
    parts = NAME_SLOT.split(template)  # text, slot, text, slot, text, slot, text
    text = parts[0] + names[0] + parts[2] + names[1] + parts[4] + names[2] + parts[6]
    return text.replace("[PLACE]", place).replace("[OBJECT]", obj)


def make_ioi_dataset(vocab: Mapping[str, Any], params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    """Clean IOI prompts, their ABC references and the mean-ablation pool (seeded)."""
    ioi = params["ioi"]
    if ioi["n_prompts"] < 1:
        raise ValueError("data_generation.ioi.n_prompts must be at least 1.")
    rng = np.random.default_rng(seed)
    templates = ioi_templates(ioi["baba_templates"])
    rows: list[dict[str, Any]] = []

    def add(role: str, pair: int, tid: int) -> None:
        spec = templates[tid]
        io, s, c = rng.choice(vocab["names"], size=3, replace=False)
        place, obj = rng.choice(vocab["places"]), rng.choice(vocab["objects"])
        clean_names = [io if slot == "IO" else s for slot in spec["order"]]
        roles = ["clean", "ref"] if role == "clean" else [role]
        for r in roles:
            names = clean_names if r == "clean" else clean_names[:2] + [c]
            rows.append({
                "task": "ioi", "role": r, "pair_id": pair, "template_id": tid,
                "template_kind": spec["kind"], "text": _fill_ioi(spec["template"], names, place, obj),
                "context_words": names, "metric_words": [io, s], "metric_weights": [1.0, -1.0],
                "io": io, "s": s, "c": c if r != "clean" else None, "category": None,
            })

    for pair in range(ioi["n_prompts"]):
        add("clean", pair, pair % len(templates))
    for tid in range(len(templates)):
        for _ in range(ioi["mean_pool_per_template"]):
            add("pool", -1, tid)
    return _finish(rows)


def make_anti_dataset(vocab: Mapping[str, Any], params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    """Non-copy list prompts, their matched copy prompts and the mean-ablation pool (seeded)."""
    anti = params["anti"]
    if anti["n_prompts"] < 1:
        raise ValueError("data_generation.anti.n_prompts must be at least 1.")
    noncopy, copy = anti["noncopy_phrasings"], anti["copy_phrasings"]
    if len(noncopy) != len(copy):
        raise ValueError("noncopy_phrasings and copy_phrasings must pair up one to one.")
    rng = np.random.default_rng(seed + 1)
    categories = sorted(vocab["categories"])
    templates = [(p, n) for p in range(len(noncopy)) for n in anti["list_lengths"]]
    rows: list[dict[str, Any]] = []

    def add(role: str, pair: int, tid: int, category: str) -> None:
        phrasing, length = templates[tid]
        pool = vocab["categories"][category]
        items = list(rng.choice(pool, size=length, replace=False))
        weights = [-1.0 / length if w in items else 1.0 / (len(pool) - length) for w in pool]
        texts = {
            "clean": noncopy[phrasing].format(items=", ".join(items)),
            "ref": copy[phrasing].format(items=", ".join(items), head=", ".join(items[:-1])),
        }
        for r in ["clean", "ref"] if role == "clean" else ["pool"]:
            rows.append({
                "task": "anti", "role": r, "pair_id": pair, "template_id": tid,
                "template_kind": f"phrasing{phrasing}_len{length}",
                "text": texts["clean" if r == "pool" else r], "context_words": items,
                "metric_words": list(pool), "metric_weights": weights,
                "io": None, "s": None, "c": None, "category": category,
            })

    for pair in range(anti["n_prompts"]):
        add("clean", pair, pair % len(templates), categories[(pair // len(templates)) % len(categories)])
    for tid in range(len(templates)):
        for k in range(anti["mean_pool_per_template"]):
            add("pool", -1, tid, categories[k % len(categories)])
    return _finish(rows)


def _finish(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.insert(0, "prompt_id", np.arange(len(frame)))
    return frame


def tokenise_prompts(
    prompts: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, prepend_bos: bool
) -> pd.DataFrame:
    """Token ids of each prompt for one model, with its END position and metric token ids.

    Prompts are never padded here: batches are later grouped by length, so END is always the
    prompt's own last token (``end_pos = n_tokens - 1``). A BOS token is prepended for the
    families whose convention is to see one (``prepend_bos`` in the model registry).
    """
    if prompts.empty:
        raise ValueError("The prompt set is empty: nothing to tokenise.")
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is None:
        raise ValueError(f"{tokenizer.name_or_path}: prepend_bos is set but the tokenizer has no BOS.")

    def word_id(word: str) -> int:
        ids = tokenizer(" " + word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"{word!r} is not a single token (with its leading space): {ids}.")
        return ids[0]

    records = []
    for row in prompts.itertuples(index=False):
        ids = tokenizer(row.text, add_special_tokens=False).input_ids
        ids = [bos, *ids] if prepend_bos else list(ids)
        missing = [w for w in row.context_words if word_id(w) not in ids]
        if missing:
            raise ValueError(f"Prompt {row.prompt_id}: {missing} not tokenised as single tokens in {row.text!r}.")
        records.append({
            "prompt_id": row.prompt_id, "task": row.task, "role": row.role, "pair_id": row.pair_id,
            "template_id": row.template_id, "input_ids": ids, "n_tokens": len(ids),
            "end_pos": len(ids) - 1, "metric_token_ids": [word_id(w) for w in row.metric_words],
            "metric_weights": list(row.metric_weights),
        })
    return pd.DataFrame(records)
