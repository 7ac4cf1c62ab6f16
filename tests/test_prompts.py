"""Prompt datasets: coverage, single-token filtering, determinism, references, tokenisation."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from ioi_anti.measure.ablation import candidate_logits, make_groups
from ioi_anti.params import DataGeneration
from ioi_anti.tasks import anti, ioi, load_task
from ioi_anti.tasks import prompts as P


@pytest.fixture()
def ioi_settings(dg_params: DataGeneration) -> ioi.IoiSettings:
    return ioi.IoiSettings.model_validate(dg_params.section("ioi"))


@pytest.fixture()
def anti_settings(dg_params: DataGeneration) -> anti.AntiSettings:
    return anti.AntiSettings.model_validate(dg_params.section("anti"))


@pytest.fixture()
def vocab(ioi_settings, anti_settings, smol_tokenizer):
    """The IOI word lists and the anti-repetition categories that are single tokens for SmolLM2."""
    tokenizers = {"smol": smol_tokenizer}
    words, _ = P.word_lists(ioi_settings, tokenizers, {"names": "min_names", "places": "min_places",
                                                       "objects": "min_objects"})
    return words | {"categories": anti.categories(anti_settings, tokenizers)[0]}


def make_ioi_dataset(vocab, settings, seed):
    return ioi.make_dataset(vocab, settings, seed).assign(task="ioi")


def make_anti_dataset(vocab, settings, seed):
    return anti.make_dataset(vocab["categories"], settings, seed).assign(task="anti")


def test_templates_cover_baba_and_abba(ioi_settings, vocab) -> None:
    frame = make_ioi_dataset(vocab, ioi_settings.model_copy(update={"n_prompts": 60}), seed=0)
    clean = frame[frame["role"] == "clean"]
    assert len(ioi_settings.baba_templates) >= 15
    assert clean["template_id"].nunique() == 2 * len(ioi_settings.baba_templates)
    assert set(clean["template_kind"]) == {"BABA", "ABBA"}
    for row in clean.itertuples():
        names = re.findall("|".join(vocab["names"]), row.text)
        assert names.count(row.io) == 1 and names.count(row.s) == 2
        assert (names[0] == row.s) == (row.template_kind == "BABA")


def test_abc_reference_differs_only_in_second_subject(ioi_settings, vocab) -> None:
    frame = make_ioi_dataset(vocab, ioi_settings, seed=3)
    clean = frame[frame["role"] == "clean"].set_index("pair_id")
    ref = frame[frame["role"] == "ref"].set_index("pair_id")
    assert len(ref) == len(clean) == ioi_settings.n_prompts
    for pair, row in clean.iterrows():
        other = ref.loc[pair]
        assert other["template_id"] == row["template_id"]
        assert other["context_words"][:2] == row["context_words"][:2]
        assert other["context_words"][2] == other["c"] and other["c"] not in (row["io"], row["s"])
        assert row["context_words"][2] == row["s"]
        assert other["metric_words"] == row["metric_words"] == [row["io"], row["s"]]


def test_copy_prompts_hold_the_same_items_and_invite_a_repeat(anti_settings, vocab) -> None:
    frame = make_anti_dataset(vocab, anti_settings, seed=0)
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


def test_same_seed_same_prompts_other_seed_other_prompts(ioi_settings, anti_settings, vocab) -> None:
    for make, settings in ((make_ioi_dataset, ioi_settings), (make_anti_dataset, anti_settings)):
        pd.testing.assert_frame_equal(make(vocab, settings, 7), make(vocab, settings, 7))
        assert not make(vocab, settings, 7)["text"].equals(make(vocab, settings, 8)["text"])


def test_single_token_filter_drops_and_explains(ioi_settings, smol_tokenizer) -> None:
    kept, dropped = P.filter_words(["Mary", "saxophone", "Bartholomew"], {"smol": smol_tokenizer}, "names")
    assert kept == ["Mary"]
    assert {d["word"] for d in dropped} == {"saxophone", "Bartholomew"}
    few = ioi_settings.model_copy(update={"names": ["Mary", "John", "Bartholomew"]})
    with pytest.raises(P.VocabularyError, match=r"Only 2 names .* \(smol\); at least 12 are needed"):
        ioi.make_prompts(few, {"smol": smol_tokenizer}, 0)


def test_vocabulary_is_shared_by_every_tokenizer(ioi_settings, smol_tokenizer) -> None:
    class NoMary:
        """A tokenizer wrapper that splits ' Mary' in two."""

        def __call__(self, text, add_special_tokens=False):
            ids = smol_tokenizer(text, add_special_tokens=add_special_tokens).input_ids
            return type("Enc", (), {"input_ids": ids * 2 if text == " Mary" else ids})()

    prompts, log = ioi.make_prompts(ioi_settings, {"smol": smol_tokenizer, "other": NoMary()}, 0)
    assert "Mary" not in set(prompts["io"]) | set(prompts["s"]) and "Mary" in ioi_settings.names
    assert log[(log["word"] == "Mary")]["tokenizer"].tolist() == ["other"]


def test_empty_prompt_set_is_an_error(dg_params, smol_tokenizer) -> None:
    with pytest.raises(ValidationError, match=r"n_prompts\n  Input should be greater than or equal to 1"):
        load_task("ioi").read_settings(dg_params.section("ioi") | {"n_prompts": 0})
    with pytest.raises(ValueError, match="empty"):
        P.tokenise_prompts(pd.DataFrame(), smol_tokenizer, False)


def test_end_position_and_bos(ioi_settings, vocab, smol_tokenizer) -> None:
    frame = make_ioi_dataset(vocab, ioi_settings, 0)
    with_bos = P.tokenise_prompts(frame, smol_tokenizer, prepend_bos=True)
    without = P.tokenise_prompts(frame, smol_tokenizer, prepend_bos=False)
    bos = smol_tokenizer.bos_token_id
    for a, b in zip(with_bos.itertuples(), without.itertuples(), strict=True):
        assert a.input_ids[0] == bos and a.input_ids.count(bos) == 1 and list(a.input_ids[1:]) == list(b.input_ids)
        assert a.end_pos == len(a.input_ids) - 1
        assert smol_tokenizer.decode(a.input_ids[a.end_pos]) == " to"
    assert with_bos["n_tokens"].nunique() > 1, "prompts of several lengths are needed for the padding test"


@pytest.mark.integration
def test_grouped_batches_read_each_prompts_own_end(smol, ioi_settings, vocab) -> None:
    """Grouping by length gives exactly the single-prompt metric; a right-padded batch would not."""
    frame = make_ioi_dataset(vocab, ioi_settings, 0)
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
