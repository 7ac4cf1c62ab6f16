"""Toy models: the synthetic language and its held-out split, the toy tasks' prompts, training, and
measurement with the study's own code."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from base_params import raw_params, settings, with_
from kedro.validation.exceptions import ParameterValidationError
from kedro.validation.parameter_validator import ParameterValidator
from pydantic import ValidationError

from ioi_anti.params import Reporting, Runtime, ToyModels
from ioi_anti.pipelines.toy_models.nodes import make_toy_prompts
from ioi_anti.pipelines.toy_models.pipeline import create_pipeline
from ioi_anti.toy import measure, train
from ioi_anti.toy.language import BOS, ToyLanguage, encode, mixture
from ioi_anti.toy.roles import categorise_learned, learned, model_roles, over_seeds

BASE = settings()
PARAMS = BASE.toy_models
TRAINING = PARAMS.training.model_copy(update={"steps": 1200})  # enough for a model trained on one kind of sequence
SMALL = PARAMS.grid.sizes[0]


@pytest.fixture(scope="module")
def language() -> ToyLanguage:
    return ToyLanguage.from_settings(PARAMS.language)


def test_every_word_is_one_token_and_training_never_draws_a_held_out_combination(language) -> None:
    tokenizer = language.tokenizer()
    for word in language.vocabulary[3:]:
        assert len(tokenizer(" " + word, add_special_tokens=False).input_ids) == 1, word
    rng = np.random.default_rng(0)
    kinds = mixture(rng, 2000, 0.5)
    counts = Counter(kinds)
    assert abs(counts["ioi"] / 2000 - 0.5) < 0.05 and abs(counts["list"] - counts["copy"]) < 150
    for kind in ("ioi", "list", "copy"):
        for _ in range(300):
            sequence = language.training_sequence(rng, kind)
            words = sequence.words
            assert words[0] == BOS and sequence.trained
            if kind == "ioi":
                template = ("when", "then").index(words[1])
                io, s = words[-1], words[words.index(",") + 1]
                assert words[-1] in language.names and {words[2], words[4]} == {io, s}
                assert not language.heldout(template, io, s)
            else:
                items = [w for w in words if any(w in v for v in language.categories.values())]
                listed = items if kind == "list" else items[: (len(items) + 1) // 2]
                category = next(c for c, v in language.categories.items() if listed[0] in v)
                assert not language.heldout(category, *listed)
    ids, trained = encode([language.training_sequence(rng, "copy"), language.training_sequence(rng, "ioi")],
                          tokenizer.get_vocab())
    assert ids.shape[1] == trained.shape[1] + 1 and trained[1].sum() == 1


def test_toy_prompts_are_held_out_balanced_and_paired_with_their_reference(language) -> None:
    prompts, tokens = make_toy_prompts(PARAMS, 0)
    again, _ = make_toy_prompts(PARAMS, 0)
    pd.testing.assert_frame_equal(prompts, again)
    ioi = prompts[prompts["task"] == "toy_ioi"]
    clean, ref = ioi[ioi["role"] == "clean"], ioi[ioi["role"] == "ref"].set_index("pair_id")
    assert len(clean) == PARAMS.prompts.n_prompts
    assert (clean["template_kind"].value_counts() == len(clean) // 2).all(), "ABBA and BABA balanced"
    for row in clean.itertuples():
        io, s = row.metric_words
        words = row.text.split()
        giver = words[words.index(",") + 1]
        template = 0 if words[0] == "when" else 1
        assert giver == s and language.heldout(template, io, s)
        first = words[1] if row.template_kind == "ABBA" else words[3]
        assert first == io, "ABBA: the indirect object is named first"
        abc = ref.loc[row.pair_id, "text"].split()
        assert abc[words.index(",") + 1] not in (io, s) and len(abc) == len(words)
    anti = prompts[prompts["task"] == "toy_anti"]
    for row in anti[anti["role"] == "clean"].itertuples():
        category = next(c for c, v in language.categories.items() if row.context_words[0] in v)
        assert language.heldout(category, *row.context_words)
        new = [w for w, weight in zip(row.metric_words, row.metric_weights, strict=True) if weight > 0]
        assert set(new) == set(language.categories[category]) - set(row.context_words)
    assert tokens.groupby(["task", "role", "template_id"])["n_tokens"].nunique().max() == 1


@pytest.fixture(scope="module")
def trained(language) -> dict[float, tuple]:
    """A small model trained at λ = 1 (IOI-like only) and one at λ = 0 (anti-repetition-like only)."""
    tokenizer = language.tokenizer()
    out = {}
    for mix in (0.0, 1.0):
        run = train.ToyRun(SMALL, mix, 0)
        model, losses = train.train(run, language, tokenizer, TRAINING)
        out[mix] = run, train.loaded(run, model, tokenizer), losses
    return out


@pytest.mark.integration
def test_training_lowers_the_loss_and_each_model_solves_what_it_was_trained_on(trained) -> None:
    _prompts, tokens = make_toy_prompts(PARAMS, 0)
    k = min(len(items) for items in PARAMS.language.categories.values())
    lengths = PARAMS.language.list_lengths
    # a list's next item is any unlisted one: at best ln(unlisted items) nats, averaged over trained positions
    floor = {"list": np.mean([np.log(k - j) for n in lengths for j in range(1, n)]), "ioi": 0.0, "copy": 0.0}
    accuracy = {}
    for mix, (run, lm, losses) in trained.items():
        kinds = ["ioi"] if mix == 1.0 else ["list", "copy"]
        for kind in kinds:
            first, last = losses[f"loss_{kind}"].iloc[:20].mean(), losses[f"loss_{kind}"].iloc[-20:].mean()
            assert last - floor[kind] < 0.25 * (first - floor[kind]), (mix, kind, first, last, floor[kind])
        accuracy[mix] = measure.accuracy(lm, run, tokens, 64).set_index(["task", "role"])
    ioi, listed, copied = ("toy_ioi", "clean"), ("toy_anti", "clean"), ("toy_anti", "ref")
    assert accuracy[1.0].at[ioi, "accuracy"] > 0.8 > 10 * accuracy[1.0].at[ioi, "chance"]
    # the top word an unlisted item of the category (several are right), or the item to copy (one is)
    assert accuracy[0.0].at[listed, "accuracy"] > max(0.5, 10 * accuracy[0.0].at[listed, "chance"])
    assert accuracy[0.0].at[copied, "accuracy"] > 0.8
    assert accuracy[0.0].at[ioi, "accuracy"] < 0.5, "never trained on IOI-like sequences"


def test_the_same_seed_trains_the_same_model_and_a_saved_model_reads_back(language) -> None:
    short = PARAMS.training.model_copy(update={"steps": 40, "warmup_steps": 5})
    model, losses, again, again_losses, _other, other_losses = (
        part for seed in (0, 0, 1)
        for part in train.train(train.ToyRun(SMALL, 0.5, seed), language, language.tokenizer(), short))
    pd.testing.assert_frame_equal(losses, again_losses)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    assert not losses["loss"].equals(other_losses["loss"]), "another seed, another model"
    restored, restored_losses = train.from_bytes(train.to_bytes(model, losses))
    pd.testing.assert_frame_equal(losses, restored_losses)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values(),
                                                 strict=True))
    with pytest.raises(Exception):  # noqa: B017, PT011 - torch raises one of several errors for a cut file
        train.from_bytes(train.to_bytes(model, losses)[:1000])


@pytest.mark.integration
def test_a_toy_model_is_measured_like_a_pretrained_one(trained) -> None:
    run, lm, _losses = trained[1.0]
    _prompts, tokens = make_toy_prompts(PARAMS, 0)
    quick = PARAMS.measure.model_copy(update={"n_boot": 200})
    tables = {mix: measure.head_table(lm_, run_, tokens, quick, BASE.runtime, 0)
              for mix, (run_, lm_, _losses) in trained.items()}
    table, baseline = tables[1.0]
    assert len(table) == lm.n_layers * lm.n_heads and {"delta_toy_ioi", "delta_toy_anti_low"} <= set(table.columns)
    assert table["mix"].eq(1.0).all() and np.isfinite(table["delta_toy_ioi"]).all()
    per_head = pd.concat([t for t, _b in tables.values()], ignore_index=True)
    baselines = pd.concat([b for _t, b in tables.values()], ignore_index=True)
    gaps = learned(baselines, 200, 0).set_index(["model", "task"])["learned"]
    assert gaps[(run.model_id, "toy_ioi")] and gaps[(trained[0.0][0].model_id, "toy_anti")]
    assert not gaps[(trained[0.0][0].model_id, "toy_ioi")], "λ = 0 never trains IOI: no IOI gap"
    heads = categorise_learned(per_head, gaps.reset_index(), 0.05)
    assert not (heads["strong_toy_ioi"] & ~heads["learned_toy_ioi"]).any(), "an unlearned task has no strong head"
    roles = model_roles(heads).set_index("mix")
    assert np.isnan(roles.at[0.0, "n_strong_toy_ioi"]) and np.isnan(roles.at[0.0, "pearson"])
    assert roles.at[1.0, "n_strong_toy_ioi"] >= 1
    summary = over_seeds(pd.concat([roles.reset_index(), roles.reset_index().assign(seed=1)]))
    assert (summary["n_seeds"] == 2).all() and summary["n_strong_toy_ioi_low"].notna().sum() == 1


@pytest.mark.parametrize(("setting", "value", "error"), [
    ("language.list_lengths", [3, 8], r"toy_models\.language\.list_lengths\n.*below the smallest category"),
    ("language.names", ["ann", "bob"], r"toy_models\.language\.names\n.*at least 3 items"),
    ("language.places", ["store", "apple"], r"toy_models\.language\n.*\['apple'\] appear twice"),
    ("grid.mixes", [0.0, 1.5], r"toy_models\.grid\.mixes\n.*λ in \[0, 1\]"),
])
def test_bad_toy_settings_are_clear_errors(setting: str, value: Any, error: str) -> None:
    """Settings that cannot make every sequence fail when the settings are read (before any training),
    naming the setting."""
    with pytest.raises(ValidationError, match=error):
        settings(**{f"toy_models__{setting.replace('.', '__')}": value})


def test_kedro_gives_the_toy_nodes_typed_settings_and_refuses_bad_ones_before_any_node_runs() -> None:
    validator = ParameterValidator({"toy_models": create_pipeline()})
    typed = validator.validate_raw_params(raw_params())
    assert isinstance(typed["toy_models"], ToyModels) and typed["toy_models"] == PARAMS
    assert isinstance(typed["runtime"], Runtime) and isinstance(typed["reporting"], Reporting)
    with pytest.raises(ParameterValidationError, match=r"'toy_models'.*\n.*grid\.mixes\n.*λ in \[0, 1\]"):
        validator.validate_raw_params(with_(raw_params(), "toy_models.grid.mixes", [0.0, 1.5]))
