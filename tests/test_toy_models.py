"""Toy models: the synthetic language and its held-out split, the toy tasks' prompts, training, and
measurement with the study's own code."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from base_params import raw_params, settings, with_
from kedro.validation.exceptions import ParameterValidationError
from kedro.validation.parameter_validator import ParameterValidator
from pydantic import ValidationError
from transformers import GPT2LMHeadModel

from ioi_anti.models.quantise import quantise_weights
from ioi_anti.params import Reporting, Runtime, ToyModels, ToyTraining
from ioi_anti.pipelines.toy_models.nodes import make_toy_prompts
from ioi_anti.pipelines.toy_models.pipeline import create_pipeline
from ioi_anti.toy import measure, train
from ioi_anti.toy.language import BOS, ToyLanguage, encode, mixture
from ioi_anti.toy.roles import categorise_learned, learned, model_roles, over_seeds, sharing_test
from ioi_anti.toy.stacked import StackedGPT2

BASE = settings()
PARAMS = BASE.toy_models
TRAINING = PARAMS.training  # λ = 0 and 1 stop after a few hundred steps
SMALL = PARAMS.grid.sizes[0]


@pytest.fixture(scope="module")
def language() -> ToyLanguage:
    return ToyLanguage.from_settings(PARAMS.language)


def test_every_word_is_one_token_and_training_never_draws_a_held_out_combination(language) -> None:
    tokenizer = language.tokenizer()
    for word in language.vocabulary[3:]:
        assert len(tokenizer(" " + word, add_special_tokens=False).input_ids) == 1, word
    rng = np.random.default_rng(0)
    assert mixture(128, 0.5) == {"ioi": 64, "list": 32, "copy": 32} and mixture(128, 0.1)["ioi"] == 13
    assert mixture(128, 0.0) == {"ioi": 0, "list": 64, "copy": 64} and sum(mixture(127, 0.25).values()) == 127
    for kind in ("ioi", "list", "copy"):
        for _ in range(300):
            sequence = language.training_sequence(rng, kind)
            words = sequence.words
            assert words[0] == BOS and sequence.trained
            if kind == "ioi":
                template = ("when", "then").index(words[1])
                io, s = words[-1], words[words.index(",") + 1]
                assert words[-1] in language.names and {words[2], words[4]} == {io, s}
                assert not language.heldout(template, *sorted((io, s)))
            else:
                items = [w for w in words if any(w in v for v in language.categories.values())]
                listed = items if kind == "list" else items[: (len(items) + 1) // 2]
                category = next(c for c, v in language.categories.items() if listed[0] in v)
                assert not any(language.heldout(category, *listed[:n]) for n in language.list_lengths)
                longest = max(language.list_lengths) + (kind == "list")
                assert len(listed) - (kind == "list") in language.list_lengths and len(listed) <= longest
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
        assert giver == s and language.heldout(template, *sorted((io, s)))
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


def _group(language: ToyLanguage, runs: list[train.ToyRun], training: ToyTraining) -> dict[train.ToyRun, train.Trained]:
    """``runs`` trained together on the corpus and validation prompts of seed 0."""
    tokenizer = language.tokenizer()
    corpus = train.Corpus.generate(language, tokenizer.get_vocab(), training.corpus_size, 0)
    validation = train.Validation.from_prompts(make_toy_prompts(PARAMS, 1)[1], tokenizer)
    return {t.run: t for t in train.train_group(runs, corpus, validation, training, len(tokenizer),
                                                PARAMS.required_share)}


@pytest.fixture(scope="module")
def trained(language) -> dict[float, tuple]:
    """A small model trained at λ = 1 (IOI-like only) and one at λ = 0 (anti-repetition-like only), together: per
    λ its run, the wrapped model, its curves and its weights as trained (the bridge renames the wrapped ones)."""
    tokenizer = language.tokenizer()
    runs = [train.ToyRun(SMALL, mix, 0) for mix in (0.0, 1.0)]
    models = {run: trained for run in runs for trained in _group(language, [run], TRAINING).values()}
    weights = {run: {k: v.clone() for k, v in models[run].model.state_dict().items()} for run in runs}  # unwrapped
    return {run.mix: (run, train.loaded(run, models[run].model, tokenizer), models[run].curves, weights[run])
            for run in runs}


def test_the_stacked_forward_is_gpt2s_and_a_model_trained_in_a_group_is_the_model_trained_alone(language) -> None:
    tokenizer = language.tokenizer()
    config = train.toy_config(SMALL, len(tokenizer))
    models = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        models.append(GPT2LMHeadModel(config).eval())
    ids = torch.randint(0, len(tokenizer), (3, 5, 20))
    with torch.no_grad():
        stacked = StackedGPT2.stack(models).logits(ids)
        for i, model in enumerate(models):
            torch.testing.assert_close(stacked[i], model(ids[i]).logits, atol=1e-5, rtol=1e-5)
    # a model stops once an evaluation brings no new best: models leave the group at different steps
    short = PARAMS.training.model_copy(update={"steps": 40, "eval_every": 5, "warmup_steps": 5, "corpus_size": 500,
                                               "stall_evaluations": 1})
    runs = [train.ToyRun(SMALL, 0.5, seed) for seed in (0, 1, 2)]
    together = _group(language, runs, short)
    assert len({len(t.curves) for t in together.values()}) > 1, "models left the group at different steps"
    for run in runs:
        alone = _group(language, [run], short)[run]
        # the same arithmetic up to float32 rounding (batched products sum in another order; Adam's normalised
        # step turns a rounding difference of a near-zero gradient into at most about lr x steps)
        pd.testing.assert_frame_equal(together[run].curves, alone.curves, rtol=1e-4)
        for name, value in alone.model.state_dict().items():
            torch.testing.assert_close(together[run].model.state_dict()[name], value, atol=2e-4, rtol=1e-4)
    one, alone = together[runs[0]], _group(language, runs[:1], short)[runs[0]]
    assert not together[runs[1]].curves["loss"].equals(one.curves["loss"]), "another model, its own batches"
    with pytest.raises(ValueError, match="one size at one λ"):
        next(train.train_group([runs[0], train.ToyRun(SMALL, 0.0, 0)], None, None, short, len(tokenizer), 0.25))
    again = _group(language, runs[:1], short)[runs[0]]
    assert all(torch.equal(a, b) for a, b in zip(alone.model.state_dict().values(), again.model.state_dict().values(),
                                                 strict=True)), "the same seed trains the same model"


class _Scripted:
    """Validation accuracies fixed per kind (IOI, list, copy) for every model: a stopping rule without training."""

    def __init__(self, accuracies: tuple[float, float, float]) -> None:
        self.accuracies = torch.tensor(accuracies)

    def accuracy(self, group: StackedGPT2) -> torch.Tensor:
        return self.accuracies.repeat(len(group), 1)


@pytest.mark.parametrize(("accuracies", "minority_steps", "stops_at", "converged"), [
    ((0.0, 1.0, 1.0), 15, 25, True),   # λ = 0.1: lists converge at step 10 (evaluations 5, 10); IOI gets 15 more
    ((0.0, 1.0, 1.0), 0, 10, True),    # no time for a minority objective
    ((1.0, 1.0, 1.0), 15, 10, True),   # the minority converged with the rest
    ((1.0, 0.5, 1.0), 15, 40, False),  # lists never converge: to `steps`
])
def test_a_model_converges_on_what_it_must_learn_then_gives_its_minority_objective_minority_steps(
        language, accuracies: tuple[float, float, float], minority_steps: int, stops_at: int, converged: bool) -> None:
    tokenizer = language.tokenizer()
    corpus = train.Corpus.generate(language, tokenizer.get_vocab(), 200, 0)
    short = PARAMS.training.model_copy(update={"steps": 40, "eval_every": 5, "warmup_steps": 5, "patience": 2,
                                               "stop_accuracy": 0.975, "stall_evaluations": 100,
                                               "minority_steps": minority_steps})
    [trained] = train.train_group([train.ToyRun(SMALL, 0.1, 0)], corpus, _Scripted(accuracies), short,
                                  len(tokenizer), 0.25)
    assert len(trained.curves) == stops_at and trained.converged is converged


@pytest.mark.integration
def test_training_lowers_the_loss_stops_when_learned_and_each_model_solves_what_it_was_trained_on(trained) -> None:
    _prompts, tokens = make_toy_prompts(PARAMS, 0)
    accuracy = {}
    for mix, (run, lm, curves, _weights) in trained.items():
        for kind in run.kinds:
            first, last = curves[f"loss_{kind}"].iloc[:20].mean(), curves[f"loss_{kind}"].iloc[-20:].mean()
            assert last < 0.5 * first, (mix, kind, first, last)
        assert len(curves) < TRAINING.steps, "stopped early: converged or stalled"
        accuracy[mix] = measure.accuracy(lm, run, tokens, 64).set_index("kind")["accuracy"]
    assert accuracy[1.0]["ioi"] >= 0.9 and accuracy[0.0]["list"] >= 0.9 and accuracy[0.0]["copy"] >= 0.9
    assert accuracy[0.0]["ioi"] < 0.5, "never trained on IOI-like sequences"


def test_a_model_must_learn_the_kinds_of_an_objective_of_at_least_the_required_share() -> None:
    assert train.required_kinds(0.9, 0.25) == ("ioi",) and train.required_kinds(0.1, 0.25) == ("list", "copy")
    assert train.required_kinds(0.25, 0.25) == train.required_kinds(0.75, 0.25) == ("ioi", "list", "copy")
    assert train.required_kinds(1.0, 0.25) == ("ioi",) and train.required_kinds(0.0, 0.25) == ("list", "copy")
    rows = [{"model": f"m{mix}", "size": "small", "mix": mix, "seed": 0, "kind": kind, "steps": 500,
             "converged": True, "accuracy": 0.5 if kind == "copy" else 1.0}
            for mix in (0.75, 0.9) for kind in train.KINDS]
    gaps = learned(pd.DataFrame(rows), PARAMS).set_index(["mix", "task"])
    assert gaps.loc[(0.75, "toy_anti"), "falls_short"], "λ = 0.75: the anti objective has a 25 % share"
    assert not gaps.loc[(0.9, "toy_anti"), ["required", "learned", "falls_short"]].any(), "10 %: not required"
    assert not gaps["falls_short"].loc[:, "toy_ioi"].any()


def test_a_saved_model_reads_back_and_a_damaged_one_is_an_error(language) -> None:
    short = PARAMS.training.model_copy(update={"steps": 10, "eval_every": 5, "warmup_steps": 2, "corpus_size": 200})
    run = train.ToyRun(SMALL, 0.5, 0)
    model = _group(language, [run], short)[run]
    restored = train.from_bytes(train.to_bytes(model), run)
    pd.testing.assert_frame_equal(model.curves, restored.curves)
    assert restored.converged == model.converged
    assert all(torch.equal(a, b) for a, b in zip(model.model.state_dict().values(),
                                                 restored.model.state_dict().values(), strict=True))
    with pytest.raises(Exception):  # noqa: B017, PT011 - torch raises one of several errors for a cut file
        train.from_bytes(train.to_bytes(model)[:1000], run)


@pytest.mark.integration
def test_a_toy_model_is_measured_like_a_pretrained_one(trained) -> None:
    run, lm, _curves, _weights = trained[1.0]
    _prompts, tokens = make_toy_prompts(PARAMS, 0)
    quick = PARAMS.measure.model_copy(update={"n_boot": 200})
    tables = {mix: measure.head_table(lm_, run_, tokens, quick, BASE.runtime, 0)
              for mix, (run_, lm_, _curves, _weights) in trained.items()}
    table, _baseline = tables[1.0]
    assert len(table) == lm.n_layers * lm.n_heads and {"delta_toy_ioi", "delta_toy_anti_low"} <= set(table.columns)
    assert table["mix"].eq(1.0).all() and np.isfinite(table["delta_toy_ioi"]).all()
    per_head = pd.concat([t for t, _b in tables.values()], ignore_index=True)
    accuracy = pd.concat([measure.accuracy(lm_, run_, tokens, 64).assign(steps=100, converged=True)
                          for run_, lm_, _curves, _weights in trained.values()], ignore_index=True)
    gaps = learned(accuracy, PARAMS)
    ok = gaps.set_index(["model", "task"])["learned"]
    assert ok[(run.model_id, "toy_ioi")] and ok[(trained[0.0][0].model_id, "toy_anti")]
    assert not ok[(trained[0.0][0].model_id, "toy_ioi")], "λ = 0 never trains IOI"
    assert not gaps["falls_short"].any(), "each learned what it was trained on"
    heads = categorise_learned(per_head, gaps, 0.05)
    assert not (heads["strong_toy_ioi"] & ~heads["learned_toy_ioi"]).any(), "an unlearned task has no strong head"
    roles = model_roles(heads).set_index("mix")
    assert np.isnan(roles.at[0.0, "n_strong_toy_ioi"]) and np.isnan(roles.at[0.0, "pearson"])
    assert roles.at[1.0, "n_strong_toy_ioi"] >= 1


@pytest.mark.integration
def test_a_toy_model_in_q8_0_measures_as_in_float32_and_in_q4_0_measurably_not(trained, language) -> None:
    run, lm, _curves, weights = trained[1.0]
    _prompts, tokens = make_toy_prompts(PARAMS, 0)
    quick = PARAMS.measure.model_copy(update={"n_boot": 200})
    tables = {"float32": measure.head_table(lm, run, tokens, quick, BASE.runtime, 0)[0]}
    for kind in ("Q8_0", "Q4_0"):
        copy = GPT2LMHeadModel(train.toy_config(run.size, len(language.tokenizer())))
        copy.load_state_dict(weights)
        changes = quantise_weights(copy, kind)
        assert len(changes) == 1 + 4 * run.size.n_layer, "the embedding and four matrices per block"
        lm_q = train.loaded(run, copy, language.tokenizer())
        tables[kind] = measure.head_table(lm_q, run, tokens, quick, BASE.runtime, 0)[0]
    # toy IOI, the task this λ = 1 model learned (Δ of an unlearned task is a fraction of a gap near zero)
    change = {kind: (tables[kind]["delta_toy_ioi"] - tables["float32"]["delta_toy_ioi"]).abs().max()
              for kind in ("Q8_0", "Q4_0")}
    assert change["Q8_0"] < 0.01, "Q8_0 rounds each weight by < 0.4 % of its block's largest"
    assert change["Q4_0"] > 3 * change["Q8_0"], change


def _roles(values: dict[float, list[float]], short: tuple[int, ...] = ()) -> pd.DataFrame:
    """Per-model roles with the given shared fractions (and r) per mix, one seed per value."""
    rows = [{"model": f"m{mix}-{seed}", "size": "small", "mix": mix, "seed": seed, "falls_short": seed in short,
             "n_strong_toy_ioi": 4.0, "n_strong_toy_anti": 3.0, "n_shared": 2.0, "shared_fraction": value,
             "pearson": value * 2 - 1} for mix, vals in values.items() for seed, value in enumerate(vals)]
    return pd.DataFrame(rows)


def test_intervals_over_seeds_stay_in_range_and_leave_out_models_that_fall_short() -> None:
    roles = _roles({0.5: [0.0, 0.05, 1.0, 0.9, 0.95]}, short=(1,))
    summary = over_seeds(roles, 500, 0).iloc[0]
    assert summary["n_seeds"] == 5 and summary["n_falls_short"] == 1 and summary["n_shared_fraction"] == 4
    assert summary["shared_fraction"] == pytest.approx(np.mean([0.0, 1.0, 0.9, 0.95]))
    assert 0 <= summary["shared_fraction_low"] < summary["shared_fraction"] < summary["shared_fraction_high"] <= 1
    assert -1 < summary["pearson_low"] < summary["pearson"] < summary["pearson_high"] < 1
    single = over_seeds(_roles({0.5: [0.4]}), 500, 0).iloc[0]
    assert single["shared_fraction_low"] == single["shared_fraction_high"] == 0.4


def test_the_sharing_test_separates_both_objectives_from_mostly_one() -> None:
    roles = _roles({0.1: [0.1, 0.05, 0.0, 0.1, 0.05], 0.5: [0.6, 0.7, 0.65, 0.8, 0.7],
                    0.9: [0.0, 0.1, 0.05, 0.0, 0.1], 0.25: [0.5, 0.6, 0.55, 0.7, 0.6]})
    test = sharing_test(roles, PARAMS, 0).iloc[0]
    assert test["n_both"] == 10 and test["n_mostly_one"] == 10 and test["mixes_both"] == "0.25, 0.5"
    assert test["difference"] > 0.4 and test["difference_low"] > 0.3 and test["p_value"] < 0.01
    same = sharing_test(_roles({0.1: [0.5, 0.6, 0.4], 0.5: [0.6, 0.4, 0.5]}), PARAMS, 0).iloc[0]
    assert same["p_value"] > 0.3 and same["difference_low"] < 0 < same["difference_high"]


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
