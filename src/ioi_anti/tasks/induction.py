"""Induction: a sequence of random common words, then its start again; the next word should be the one
that followed the current word the first time ("... lake coat river dog lake coat" -> " river").

Prompt: ``prefix`` then n distinct words w1..wn then w1..wk, k = n - 2, so END is wk and the answer
w(k+1) (one template per n in ``lengths``, all prompts of a template one token length). Metric at END:
logit(w(k+1)) minus the mean logit of the sequence's other words. Reference: the same second half after
n unrelated words (u1..un w1..wk): no earlier occurrence to copy from, so the metric falls to what the
words' own statistics give. Ablation values: clean and pool prompts of the same template.

Beside Δ_induction the per-head table reports ``induction_score``: the mean attention, over the clean
prompts, from each token of the repeated half to the token after its first occurrence (the induction
heads' signature, Olsson et al. 2022).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import pandas as pd

from ioi_anti.measure.ablation import attention_patterns, make_groups
from ioi_anti.params import Count, Settings, Size, need
from ioi_anti.tasks import Task, TaskError, Tokenizers, seed_for
from ioi_anti.tasks.prompts import clean_and_pool, numbered, word_lists

Length = Annotated[int, need("an integer >= 3 (k = n - 2 words repeated)", ge=3)]


class InductionSettings(Settings):
    """``data_generation.induction``: how many prompts, the sequence lengths, the prefix and the words."""

    n_prompts: Count
    mean_pool_per_template: Size
    lengths: Annotated[list[Length], need("a non-empty list of integers >= 3 (k = n - 2 words repeated)",
                                          min_length=1)]
    min_words: Count
    prefix: str
    words: list[str]


def _text(prefix: str, words: Sequence[str]) -> str:
    return prefix + "".join(" " + w for w in words)


def check_tokenised_alike(prefix: str, words: Sequence[str], tokenizers: Tokenizers) -> None:
    """Each word after the prefix must be one token of its own in every tokenizer (BPE merges across a
    space are possible in principle); else the two occurrences would not be the same token."""
    for name, tokenizer in tokenizers.items():
        whole = tokenizer(_text(prefix, words), add_special_tokens=False).input_ids
        parts = tokenizer(prefix, add_special_tokens=False).input_ids + [
            tokenizer(" " + w, add_special_tokens=False).input_ids[0] for w in words]
        if whole != parts:
            raise TaskError(f"induction: tokenizer {name} does not split {_text(prefix, words)!r} into the prefix "
                            "and one token per word; change data_generation.induction.prefix.")


def make_dataset(words: Sequence[str], settings: InductionSettings, seed: int) -> pd.DataFrame:
    """Clean repeated sequences, their unrelated-first-half references and the ablation pool (seeded)."""
    rng = np.random.default_rng(seed)
    lengths, prefix = settings.lengths, settings.prefix
    rows: list[dict[str, Any]] = []

    def add(role: str, pair: int, tid: int) -> None:
        n = lengths[tid]
        k = n - 2
        drawn = list(rng.choice(words, size=2 * n, replace=False))
        sequence, unrelated = drawn[:n], drawn[n:]
        weights = [1.0 if i == k else -1.0 / (n - 1) for i in range(n)]
        texts = {"clean": sequence + sequence[:k], "ref": unrelated + sequence[:k]}
        for r in ["clean", "ref"] if role == "clean" else ["pool"]:
            shown = texts["ref" if r == "ref" else "clean"]
            rows.append({"role": r, "pair_id": pair, "template_id": tid, "template_kind": f"n{n}",
                         "text": _text(prefix, shown), "context_words": shown, "metric_words": list(sequence),
                         "metric_weights": weights})

    clean_and_pool(add, settings.n_prompts, len(lengths), settings.mean_pool_per_template)
    return numbered(rows)


def make_prompts(settings: InductionSettings, tokenizers: Tokenizers,
                 seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Words that are single tokens for every model of the run, then the prompts."""
    vocab, dropped = word_lists(settings, tokenizers, {"words": "min_words"})
    needed = 2 * max(settings.lengths)
    if len(vocab["words"]) < needed:
        raise ValueError(f"induction: {len(vocab['words'])} single-token words, {needed} needed for the longest "
                         "sequence and its unrelated first half; add words to data_generation.induction.words.")
    check_tokenised_alike(settings.prefix, vocab["words"], tokenizers)
    return make_dataset(vocab["words"], settings, seed_for(seed, "induction")), dropped


def induction_scores(lm: Any, tokens: pd.DataFrame, max_batch: int) -> pd.DataFrame:
    """Per clean prompt and head: mean attention from each repeated token to the token after its first
    occurrence (rows layer, head, pair_id, score)."""
    frames = []
    for group in make_groups(tokens[tokens["role"] == "clean"], lm.device, max_batch):
        patterns = attention_patterns(lm, group)  # [layer, b, head, q, k]
        for i, ids in enumerate(group.input_ids.tolist()):
            first: dict[int, int] = {}
            queries, keys = [], []
            for pos, token in enumerate(ids):
                if token in first and first[token] + 1 < pos:
                    queries.append(pos)
                    keys.append(first[token] + 1)
                first.setdefault(token, pos)
            score = patterns[:, i][:, :, queries, keys].mean(-1).cpu().numpy()  # [layer, head]
            layers, heads = np.meshgrid(np.arange(score.shape[0]), np.arange(score.shape[1]), indexing="ij")
            frames.append(pd.DataFrame({"layer": layers.ravel(), "head": heads.ravel(),
                                        "pair_id": int(group.pair_ids[i]), "score": score.ravel()}))
    return pd.concat(frames, ignore_index=True)


def attention_targets(input_ids: Sequence[int], tokens: Sequence[int],
                      weights: Sequence[float]) -> dict[str, list[int]]:
    """The answer's first occurrence (the token after the current token's earlier occurrence, where an
    induction head looks) and the current token's earlier occurrence, END excluded."""
    ids = list(input_ids)
    answer = tokens[int(np.argmax(weights))]
    return {"token after earlier": [ids.index(answer)], "earlier occurrence": [ids.index(ids[-1])]}


TASK = Task(name="induction", label="induction", short="induction", colour="#CC79A7", make_prompts=make_prompts,
            settings=InductionSettings, ablation_roles=("clean", "pool"), score=induction_scores,
            score_name="induction_score", attention_targets=attention_targets,
            description="induction: logit of the word that followed the current one earlier − mean logit of the "
                        "sequence's other words; reference: the same second half after unrelated words")
