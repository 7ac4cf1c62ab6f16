"""What every task's prompts go through: the single-token word filter and tokenisation.

Every task's prompt table shares one schema (:mod:`ioi_anti.tasks`), so that one metric and one
ablation engine serve all tasks: every prompt row carries ``metric_words`` and ``metric_weights``,
and the task metric is ``sum_k weight_k * logit(" " + word_k)`` read at the END token (the last
token of the prompt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ioi_anti.params import Settings

if TYPE_CHECKING:  # annotations only; the tokenizers passed in bring transformers with them
    from transformers import PreTrainedTokenizerBase


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


def require_words(kept: Sequence[str], needed: int, what: str, tokenizers: Mapping[str, Any]) -> None:
    """Raise :class:`VocabularyError` when fewer than ``needed`` words survived the filter."""
    if len(kept) < needed:
        raise VocabularyError(
            f"Only {len(kept)} {what} are single tokens in every tokenizer of the run "
            f"({', '.join(tokenizers)}); at least {needed} are needed. Add single-token words "
            "to conf/base/parameters_data_generation.yml or drop a model from the run."
        )


def word_lists(
    settings: Settings, tokenizers: Mapping[str, PreTrainedTokenizerBase], lists: Mapping[str, str]
) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """The single-token words of each list field ``key`` of a task's ``settings`` (``lists``: key -> the
    field of its minimum count) and the log of the words dropped, per tokenizer. The fields are read by
    name (``getattr``) because the caller names them: each task has its own lists."""
    if not tokenizers:
        raise VocabularyError("No tokenizers given: the run has no models.")
    vocab: dict[str, list[str]] = {}
    drops: list[dict[str, str]] = []
    for key, minimum in lists.items():
        kept, dropped = filter_words(getattr(settings, key), tokenizers, key)
        drops += dropped
        require_words(kept, getattr(settings, minimum), key, tokenizers)
        vocab[key] = kept
    return vocab, pd.DataFrame(drops, columns=["list", "word", "tokenizer"])


def clean_and_pool(add: Callable[[str, int, int], None], n_prompts: int, n_templates: int,
                   pool_per_template: int) -> None:
    """Call ``add(role, pair_id, template_id)`` for each clean prompt (pair i on template i mod n, so every
    template is used once there are n prompts; ``add`` makes its reference too), then for
    ``pool_per_template`` pool prompts of every template."""
    for pair in range(n_prompts):
        add("clean", pair, pair % n_templates)
    for tid in range(n_templates):
        for _ in range(pool_per_template):
            add("pool", -1, tid)


def numbered(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A task's prompt rows as a table with ``prompt_id`` 0..n-1 (unique within the task)."""
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


def check_template_lengths(tokens: pd.DataFrame, task: str, roles: Sequence[str], model_id: str) -> None:
    """Prompts of one template and of the ablation ``roles`` must share their token length: mean and
    resample ablation values are taken position by position over them. Raises a ValueError naming the
    task, template and lengths otherwise (a task whose templates hold multi-token words)."""
    rows = tokens[(tokens["task"] == task) & tokens["role"].isin(roles)]
    lengths = rows.groupby("template_id")["n_tokens"].unique()
    uneven = lengths[lengths.map(len) > 1]
    if not uneven.empty:
        found = sorted(int(n) for n in uneven.iloc[0])
        raise ValueError(f"{model_id}: {task} template {uneven.index[0]} has prompts of {found} "
                         f"tokens among its {'/'.join(roles)} prompts; every prompt of a template must have one "
                         "length (use single-token words, or one template per length).")
