"""Prompt datasets: coverage, single-token filtering, determinism, references, tokenisation."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from ioi_anti.measure.ablation import candidate_logits, make_groups
from ioi_anti.tasks import anti, ioi
from ioi_anti.tasks import prompts as P


@pytest.fixture()
def vocab(dg_params, smol_tokenizer):
    """The IOI word lists and the anti-repetition categories that are single tokens for SmolLM2."""
    tokenizers = {"smol": smol_tokenizer}
    words, _ = P.word_lists(dg_params["ioi"], tokenizers, {"names": "min_names", "places": "min_places",
                                                           "objects": "min_objects"})
    return words | {"categories": anti.categories(dg_params["anti"], tokenizers)[0]}


def make_ioi_dataset(vocab, params, seed):
    return ioi.make_dataset(vocab, params["ioi"], seed).assign(task="ioi")


def make_anti_dataset(vocab, params, seed):
    return anti.make_dataset(vocab["categories"], params["anti"], seed).assign(task="anti")


def test_templates_cover_baba_and_abba(dg_params, vocab) -> None:
    dg_params["ioi"]["n_prompts"] = 60
    frame = make_ioi_dataset(vocab, dg_params, seed=0)
    clean = frame[frame["role"] == "clean"]
    assert len(dg_params["ioi"]["baba_templates"]) >= 15
    assert clean["template_id"].nunique() == 2 * len(dg_params["ioi"]["baba_templates"])
    assert set(clean["template_kind"]) == {"BABA", "ABBA"}
    for row in clean.itertuples():
        names = re.findall("|".join(vocab["names"]), row.text)
        assert names.count(row.io) == 1 and names.count(row.s) == 2
        assert (names[0] == row.s) == (row.template_kind == "BABA")


def test_abc_reference_differs_only_in_second_subject(dg_params, vocab) -> None:
    frame = make_ioi_dataset(vocab, dg_params, seed=3)
    clean = frame[frame["role"] == "clean"].set_index("pair_id")
    ref = frame[frame["role"] == "ref"].set_index("pair_id")
    assert len(ref) == len(clean) == dg_params["ioi"]["n_prompts"]
    for pair, row in clean.iterrows():
        other = ref.loc[pair]
        assert other["template_id"] == row["template_id"]
        assert other["context_words"][:2] == row["context_words"][:2]
        assert other["context_words"][2] == other["c"] and other["c"] not in (row["io"], row["s"])
        assert row["context_words"][2] == row["s"]
        assert other["metric_words"] == row["metric_words"] == [row["io"], row["s"]]


def test_copy_prompts_hold_the_same_items_and_invite_a_repeat(dg_params, vocab) -> None:
    frame = make_anti_dataset(vocab, dg_params, seed=0)
    clean = frame[frame["role"] == "clean"].set_index("pair_id")
    ref = frame[frame["role"] == "ref"].set_index("pair_id")
    assert clean["category"].nunique() >= 3 and clean["template_id"].nunique() == 9
    for pair, row in clean.iterrows():
        items = list(row["context_words"])
        copy = ref.loc[pair]
        assert list(copy["context_words"]) == items
        assert copy["text"].endswith(", ".join(items[:-1]) + ",")
        assert row["text"].endswith(", ".join(items) + ",")
        weights = dict(zip(row["metric_words"], row["metric_weights"], strict=True))
        assert all(weights[w] < 0 for w in items)
        assert sum(w for w in weights.values() if w > 0) == pytest.approx(1.0)
        assert sum(w for w in weights.values() if w < 0) == pytest.approx(-1.0)


def test_same_seed_same_prompts_other_seed_other_prompts(dg_params, vocab) -> None:
    for make in (make_ioi_dataset, make_anti_dataset):
        pd.testing.assert_frame_equal(make(vocab, dg_params, 7), make(vocab, dg_params, 7))
        assert not make(vocab, dg_params, 7)["text"].equals(make(vocab, dg_params, 8)["text"])


def test_single_token_filter_drops_and_explains(dg_params, smol_tokenizer) -> None:
    kept, dropped = P.filter_words(["Mary", "saxophone", "Bartholomew"], {"smol": smol_tokenizer}, "names")
    assert kept == ["Mary"]
    assert {d["word"] for d in dropped} == {"saxophone", "Bartholomew"}
    dg_params["ioi"]["names"] = ["Mary", "John", "Bartholomew"]
    with pytest.raises(P.VocabularyError, match=r"Only 2 names .* \(smol\); at least 12 are needed"):
        ioi.make_prompts(dg_params["ioi"], {"smol": smol_tokenizer}, 0)


def test_vocabulary_is_shared_by_every_tokenizer(dg_params, smol_tokenizer) -> None:
    class NoMary:
        """A tokenizer wrapper that splits ' Mary' in two."""

        def __call__(self, text, add_special_tokens=False):
            ids = smol_tokenizer(text, add_special_tokens=add_special_tokens).input_ids
            return type("Enc", (), {"input_ids": ids * 2 if text == " Mary" else ids})()

    prompts, log = ioi.make_prompts(dg_params["ioi"], {"smol": smol_tokenizer, "other": NoMary()}, 0)
    assert "Mary" not in set(prompts["io"]) | set(prompts["s"]) and "Mary" in dg_params["ioi"]["names"]
    assert log[(log["word"] == "Mary")]["tokenizer"].tolist() == ["other"]


def test_empty_prompt_set_is_an_error(dg_params, vocab, smol_tokenizer) -> None:
    dg_params["ioi"]["n_prompts"] = 0
    with pytest.raises(ValueError, match="at least 1"):
        make_ioi_dataset(vocab, dg_params, 0)
    with pytest.raises(ValueError, match="empty"):
        P.tokenise_prompts(pd.DataFrame(), smol_tokenizer, False)


def test_end_position_and_bos(dg_params, vocab, smol_tokenizer) -> None:
    frame = make_ioi_dataset(vocab, dg_params, 0)
    with_bos = P.tokenise_prompts(frame, smol_tokenizer, prepend_bos=True)
    without = P.tokenise_prompts(frame, smol_tokenizer, prepend_bos=False)
    bos = smol_tokenizer.bos_token_id
    for a, b in zip(with_bos.itertuples(), without.itertuples(), strict=True):
        assert a.input_ids[0] == bos and a.input_ids.count(bos) == 1 and list(a.input_ids[1:]) == list(b.input_ids)
        assert a.end_pos == len(a.input_ids) - 1
        assert smol_tokenizer.decode(a.input_ids[a.end_pos]) == " to"
    assert with_bos["n_tokens"].nunique() > 1, "prompts of several lengths are needed for the padding test"


@pytest.mark.integration
def test_grouped_batches_read_each_prompts_own_end(smol, dg_params, vocab) -> None:
    """Grouping by length gives exactly the single-prompt metric; a right-padded batch would not."""
    frame = make_ioi_dataset(vocab, dg_params, 0)
    tokens = P.tokenise_prompts(frame[frame["role"] == "clean"].head(8), smol.tokenizer, False)
    _, batched, _ = candidate_logits(smol, make_groups(tokens, smol.device))
    singles = [candidate_logits(smol, make_groups(tokens.iloc[[i]], smol.device))[1][0] for i in range(len(tokens))]
    np.testing.assert_allclose(batched, singles, atol=1e-4)
    longest = int(tokens["n_tokens"].max())
    padded = torch.tensor([ids + [0] * (longest - len(ids)) for ids in tokens["input_ids"]])
    with torch.no_grad():
        last = smol.bridge(padded, use_cache=False)[:, -1]
    naive = np.array([(last[i, t[0]] - last[i, t[1]]).item() for i, t in enumerate(tokens["metric_token_ids"])])
    short = (tokens["n_tokens"] < longest).to_numpy()
    assert not np.allclose(naive[short], np.asarray(singles)[short], atol=1e-2)
