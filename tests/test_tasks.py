"""Tasks as plug-ins: loading by name or import path, the built-in tasks' prompts, a task's own
per-head score, and the errors a badly written task gets."""

from __future__ import annotations

import dataclasses
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from base_params import settings
from conftest import PROJECT
from pydantic import ValidationError
from tiny_models import TINY_FAMILIES, tiny_model

from ioi_anti.analysis.categories import SHARED_COLOUR, WEAK_COLOUR, Pair, run_pair
from ioi_anti.figures.hero import reader_colours, route_colours
from ioi_anti.measure.sweep import ModelSweep
from ioi_anti.models.loading import load_tokenizer
from ioi_anti.params import Settings
from ioi_anti.tasks import (
    BUILT_IN,
    PAIR,
    Task,
    TaskError,
    check_prompts,
    load_task,
    load_tasks,
    make_task_prompts,
)
from ioi_anti.tasks import prompts as P
from ioi_anti.tasks.induction import induction_scores

EXAMPLES = PROJECT / "examples"


@pytest.fixture()
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_built_in_tasks_load_by_name_and_a_users_task_by_import_path(examples_on_path) -> None:
    assert [load_task(name).name for name in BUILT_IN] == list(BUILT_IN)
    assert load_task("ioi").ablation_roles == ("ref", "pool") and load_task("anti").ablation_roles == ("clean", "pool")
    user = load_task("agreement_task:agreement")
    assert isinstance(user, Task) and user.name == "agreement"
    assert [t.name for t in load_tasks(["ioi", "anti", "agreement_task:agreement"])] == ["ioi", "anti", "agreement"]


@pytest.mark.parametrize(("names", "message"), [
    (["ioi", "induktion"], "Unknown task 'induktion'.*import path"),
    (["ioi", "no_such_module:task"], "cannot import 'no_such_module'"),
    (["ioi", "agreement_task:missing"], "agreement_task.missing is missing, not an ioi_anti.tasks.Task"),
    (["ioi", "agreement_task:NOUNS"], "is dict, not an ioi_anti.tasks.Task"),
    (["ioi"], "at least two tasks"),
    ("ioi", "at least two tasks"),
    (["ioi", "ioi"], "the same task twice"),
])
def test_bad_task_settings_are_clear_errors(examples_on_path, names, message) -> None:
    with pytest.raises(TaskError, match=message):
        load_tasks(names)


def test_a_task_definition_is_checked() -> None:
    def make(params, tokenizers, seed):
        raise AssertionError("not called")

    with pytest.raises(TaskError, match="lower-case letters"):
        Task(name="Bad-Name", label="x", short="x", colour="#000000", make_prompts=make, settings=Settings)
    with pytest.raises(TaskError, match="ablation_roles"):
        Task(name="ok", label="x", short="x", colour="#000000", make_prompts=make, settings=Settings,
             ablation_roles=("refs",))
    good = {"prompt_id": [0, 1], "role": ["clean", "ref"], "pair_id": [0, 0], "template_id": [0, 0],
            "text": ["a", "b"], "context_words": [[], []], "metric_words": [["x"], ["x"]],
            "metric_weights": [[1.0], [1.0]]}
    check_prompts("ok", pd.DataFrame(good))
    with pytest.raises(TaskError, match=r"lacks column\(s\) \['metric_weights'\]"):
        check_prompts("ok", pd.DataFrame(good).drop(columns="metric_weights"))
    with pytest.raises(TaskError, match="exactly one ref prompt"):
        check_prompts("ok", pd.DataFrame(good).assign(pair_id=[0, 1]))
    with pytest.raises(TaskError, match="number of metric words and weights"):
        check_prompts("ok", pd.DataFrame(good).assign(metric_weights=[[1.0, 2.0], [1.0]]))


@pytest.mark.parametrize(("name", "change", "where", "message"), [
    ("ioi", {"n_prompts": 0}, "n_prompts", "greater than or equal to 1"),
    ("ioi", {"min_names": 2}, "min_names", "greater than or equal to 3"),
    ("ioi", {"baba_templates": ["Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to"]},
     "baba_templates", r"must be .* naming \[B\], \[A\], \[B\] in that order; template 0 is not"),
    ("anti", {"mean_pool_per_template": -1}, "mean_pool_per_template", "greater than or equal to 0"),
    ("anti", {"list_lengths": []}, "list_lengths", "at least 1 item"),
    ("anti", {"list_lengths": [3, 1]}, "list_lengths.1", "greater than or equal to 2"),
    ("anti", {"list_lengths": [3, 9]}, "min_items_per_category", "must be larger than the longest list"),
    ("anti", {"copy_phrasings": ["Say it twice: {items}. Say it twice: {head},"]}, "copy_phrasings",
     "must be a list of copy phrasings pairing up one to one"),
    ("induction", {"lengths": [6, 2]}, "lengths.1", "greater than or equal to 3"),
    ("factual", {"templates": ["The capital is"]}, "templates", "holding {subject} once"),
    ("paper_ioi", {"template": "When {A} and {B} went home"}, "template", "naming {A} twice and {B} once"),
    ("paper_anti", {"n_prompts": "400"}, "n_prompts", "valid integer"),
    ("paper_anti", {"name": ["Alice"]}, "name", "Extra inputs are not permitted"),
])
def test_a_tasks_settings_are_checked_when_read(name, change, where, message) -> None:
    """Each built-in task's section of data_generation is read into its model, which refuses what its prompts
    could not be made from (one error, at the setting's place), a value of another type and an unknown key."""
    task = load_task(name)
    section = settings().data_generation.section(name)
    assert task.read_settings(section) == task.settings.model_validate(section)
    with pytest.raises(ValidationError) as caught:
        task.read_settings(section | change)
    (error,) = caught.value.errors()
    assert ".".join(map(str, error["loc"])) == where and re.search(message, error["msg"]), error
    missing = {key: value for key, value in section.items() if key != "n_prompts"}
    with pytest.raises(ValidationError, match=r"n_prompts\n  Field required"):
        task.read_settings(missing)


def test_settings_name_bad_tasks_before_anything_runs(examples_on_path) -> None:
    from base_params import raw_params, with_

    from ioi_anti.run.validation import settings_problems

    base = raw_params()
    problems = settings_problems(with_(base, "tasks", ["ioi", "anti", "nope"]))
    assert any("Unknown task 'nope'" in p for p in problems)
    user = with_(with_(base, "tasks", ["ioi", "anti", "agreement_task:agreement"]), "data_generation.agreement",
                 {"n_pool": 2})
    assert settings_problems(user) == []
    assert any("data_generation.agreement" in p for p in settings_problems(
        with_(base, "data_generation.agreement", {"n_pool": 2}))), "not a task of the run: a typo"
    (problem,) = settings_problems(with_(base, "categorisation.pair", ["ioi", "induction"]))
    assert "categorisation.pair names ['induction'], not among the run's tasks ['anti', 'ioi']" in problem
    (problem,) = settings_problems(with_(base, "categorisation.pair", ["ioi"]))
    assert "must name two tasks" in problem
    (problem,) = settings_problems(with_(base, "categorisation.pair", ["ioi", "ioi"]))
    assert "two different tasks" in problem
    named = with_(user, "categorisation.pair", ["agreement", "ioi"])
    assert settings_problems(named) == [], "a task of one's own is named by its name"
    assert any("by its name, not its import path" in p for p in settings_problems(
        with_(user, "categorisation.pair", ["agreement_task:agreement", "ioi"])))


def test_a_pair_names_its_categories_and_keeps_their_colours_apart(examples_on_path) -> None:
    pair = run_pair(["ioi", "anti", "induction"], ["induction", "ioi"])
    assert pair.categories == ("induction-only", "IOI-only", "shared", "weak")
    assert pair.colours == {"induction-only": "#CC79A7", "IOI-only": "#0072B2", "shared": SHARED_COLOUR,
                            "weak": WEAK_COLOUR}
    assert pair.short_category("IOI-only") == "IOI" and pair.short_category("shared") == "shared"
    green = dataclasses.replace(load_task("agreement_task:agreement"), colour=SHARED_COLOUR)
    also_green = dataclasses.replace(load_task("factual"), name="other", short="other", colour=SHARED_COLOUR)
    colours = list(Pair(green, also_green).colours.values())
    assert len(set(colours)) == 4, "a task coloured like the shared heads, or like the other task, gets a spare"
    for run in (pair, run_pair(["induction", "agreement_task:agreement"], ["induction", "agreement"])):
        routes, readers = route_colours(run), reader_colours(run)
        assert len(set(routes.values())) == len(routes), "every route of the decomposition figure its own colour"
        assert not set(readers.values()) & set(run.colours.values())


def test_induction_prompts_repeat_the_start_of_the_sequence(smol_tokenizer) -> None:
    frame, _ = make_task_prompts(["induction", "factual"], settings().data_generation, {"smol": smol_tokenizer}, 0)
    frame = frame[frame["task"] == "induction"]
    clean = frame[frame["role"] == "clean"].set_index("pair_id")
    ref = frame[frame["role"] == "ref"].set_index("pair_id")
    assert sorted(clean["template_kind"].unique()) == ["n10", "n6", "n8"]
    for pair, row in clean.iterrows():
        sequence = list(row["metric_words"])
        n = len(sequence)
        assert list(row["context_words"]) == sequence + sequence[: n - 2]
        assert row["text"] == "Words:" + "".join(" " + w for w in row["context_words"])
        answer = dict(zip(row["metric_words"], row["metric_weights"], strict=True))
        assert answer[sequence[n - 2]] == 1.0 and sum(answer.values()) == pytest.approx(0.0)
        other = list(ref.loc[pair, "context_words"])
        assert other[n:] == sequence[: n - 2] and not set(other[:n]) & set(sequence)
    tokens = P.tokenise_prompts(frame, smol_tokenizer, False)
    assert tokens.groupby("template_id")["n_tokens"].nunique().eq(1).all()


def test_factual_prompts_ask_the_same_of_an_unnamed_subject(smol_tokenizer) -> None:
    data_generation = settings().data_generation
    frame, dropped = make_task_prompts(["induction", "factual"], data_generation, {"smol": smol_tokenizer}, 0)
    frame, dropped = frame[frame["task"] == "factual"], dropped[dropped["task"] == "factual"]
    assert "Bangkok" in set(dropped["word"]) and "Bangkok" not in set(frame["metric_words"].iloc[0])
    clean = frame[frame["role"] == "clean"].set_index("pair_id")
    ref = frame[frame["role"] == "ref"].set_index("pair_id")
    facts = data_generation.section("factual")["facts"]
    for pair, row in clean.iterrows():
        assert facts[row["subject"]] == row["answer"] and row["subject"] in row["text"]
        assert ref.loc[pair, "text"] == row["text"].replace(row["subject"], "this country")
        weights = dict(zip(row["metric_words"], row["metric_weights"], strict=True))
        assert weights[row["answer"]] == 1.0 and sum(weights.values()) == pytest.approx(0.0)


def test_new_tasks_leave_the_pairs_prompts_alone(smol_tokenizer) -> None:
    data_generation = settings().data_generation
    pair, _ = make_task_prompts(PAIR, data_generation, {"smol": smol_tokenizer}, 0)
    four, _ = make_task_prompts([*PAIR, "induction", "factual"], data_generation, {"smol": smol_tokenizer}, 0)
    pd.testing.assert_frame_equal(pair, four[four["task"].isin(PAIR)].dropna(axis=1, how="all"), check_like=True)


def test_a_template_of_several_lengths_is_refused_before_any_model_runs(smol_tokenizer) -> None:
    tokens = pd.DataFrame({"task": "t", "role": ["clean", "pool", "ref"], "template_id": 0, "n_tokens": [5, 6, 7]})
    with pytest.raises(ValueError, match=r"m: t template 0 has prompts of \[5, 6\] tokens"):
        P.check_template_lengths(tokens, "t", ("clean", "pool"), "m")
    P.check_template_lengths(tokens, "t", ("ref",), "m")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_induction_score_is_the_attention_to_the_token_after_the_first_occurrence(family, smol_tokenizer) -> None:
    """Against the pattern read from TransformerLens's own cache, position by position."""
    data_generation = settings(data_generation__induction__n_prompts=3,
                               data_generation__induction__mean_pool_per_template=1).data_generation
    frame, _ = make_task_prompts(["induction", "factual"], data_generation, {"smol": smol_tokenizer}, 0)
    lm = tiny_model(family, smol_tokenizer)
    induction = frame[frame["task"] == "induction"].set_index("prompt_id")
    tokens = P.tokenise_prompts(induction.reset_index(), smol_tokenizer, lm.spec.prepend_bos)
    scores = induction_scores(lm, tokens, 2).set_index(["pair_id", "layer", "head"])["score"]
    assert len(scores) == 3 * lm.n_layers * lm.n_heads
    for row in tokens[tokens["role"] == "clean"].itertuples():
        n = len(induction.loc[row.prompt_id, "metric_words"])
        ids = torch.tensor([row.input_ids])
        _, cache = lm.bridge.run_with_cache(ids)
        start2, start1 = row.n_tokens - (n - 2), row.n_tokens - (n - 2) - n
        for layer in range(lm.n_layers):
            pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]
            expected = [pattern[:, start2 + j, start1 + j + 1] for j in range(n - 2)]
            np.testing.assert_allclose(scores.loc[row.pair_id, layer].to_numpy(),
                                       torch.stack(expected).mean(0).numpy(), atol=1e-6)


def test_a_sweep_measures_a_tasks_score_over_the_whole_grid(smol_tokenizer) -> None:
    data_generation = settings(data_generation__induction__n_prompts=3,
                               data_generation__induction__mean_pool_per_template=1).data_generation
    frame, _ = make_task_prompts(["induction", "factual"], data_generation, {"smol": smol_tokenizer}, 0)
    lm = tiny_model("gpt2", smol_tokenizer)
    tokens = P.tokenise_prompts(frame[frame["task"] == "induction"], smol_tokenizer, lm.spec.prepend_bos)
    runtime = settings(runtime__device="cpu", runtime__dtype="float32", runtime__max_batch=4,
                       runtime__max_rows=64).runtime
    task = load_task("induction")
    sweep = ModelSweep(lm.spec, tokens, runtime, "mean", 0, lm=lm, roles={"induction": task.ablation_roles},
                       scores={"induction": task.score})
    rows = sweep.job("tiny__induction__x/score")
    assert set(rows["method"]) == {"score"} and set(rows["task"]) == {"induction"}
    assert len(rows) == 3 * lm.n_layers * lm.n_heads and rows["effect"].between(0, 1).all()


def test_the_example_task_makes_prompts_of_one_length_per_template(examples_on_path, smol_tokenizer) -> None:
    sys.modules.pop("agreement_task", None)
    frame, _ = make_task_prompts(["ioi", "agreement_task:agreement"], settings().data_generation,
                                 {"smol": smol_tokenizer}, 0)
    tokens = P.tokenise_prompts(frame, smol_tokenizer, False)
    P.check_template_lengths(tokens, "agreement", ("clean", "pool"), "smol")
    assert (tokens["task"] == "agreement").sum() > 20


def test_attention_targets_point_at_the_words_each_task_names(smol_tokenizer) -> None:
    """IOI's IO, S1 and S2, anti-repetition's listed items and induction's answer and earlier occurrence sit
    where the prompt's text has those words, in every clean prompt (END never among them)."""
    frame, _ = make_task_prompts(["ioi", "anti", "induction"], settings().data_generation, {"smol": smol_tokenizer}, 0)
    clean = frame[frame["role"] == "clean"]
    tokens = P.tokenise_prompts(clean, smol_tokenizer, prepend_bos=False).set_index(["task", "prompt_id"])
    word = {w: smol_tokenizer(" " + w, add_special_tokens=False).input_ids[0] for row in clean.itertuples()
            for w in [*row.metric_words, *row.context_words]}
    for row in clean.itertuples():
        token = tokens.loc[(row.task, row.prompt_id)]
        ids = token["input_ids"]
        targets = load_task(row.task).attention_targets(ids, token["metric_token_ids"], token["metric_weights"])
        assert all(0 <= p < len(ids) - 1 for positions in targets.values() for p in positions)
        if row.task == "ioi":
            io, s = word[row.io], word[row.s]
            assert ids[targets["IO"][0]] == io and ids[targets["S1"][0]] == ids[targets["S2"][0]] == s
            assert targets["S1"][0] < targets["S2"][0]
        elif row.task == "anti":
            assert [ids[p] for p in targets["all list items"]] == [word[w] for w in row.context_words]
            assert targets["last list item"] == targets["all list items"][-1:]
        else:
            k = len(row.metric_words) - 2  # the answer is w(k+1); END is wk
            assert ids[targets["token after earlier"][0]] == word[row.metric_words[k]]
            assert ids[targets["earlier occurrence"][0]] == ids[-1] == word[row.metric_words[k - 1]]
            assert targets["token after earlier"][0] == targets["earlier occurrence"][0] + 1
    assert load_task("factual").attention_targets is None


@pytest.mark.parametrize("name", ["paper_ioi", "paper_anti"])
def test_the_published_prompt_forms_are_tasks(name, smol_tokenizer, gemma_spec) -> None:
    """`paper_ioi` and `paper_anti` make the published prompts (SOURCE.md): one template, answer B,
    distractor A, two different names of the published list; the reference puts a third name for the
    second A; names that are not single tokens in every tokenizer are dropped and logged."""
    task = load_task(name)
    params = task.read_settings(settings().data_generation.section(name) | {"n_prompts": 12,
                                                                            "mean_pool_per_template": 2})
    tokenizers = {"smol": smol_tokenizer, "gemma": load_tokenizer(gemma_spec)}
    table, dropped = task.prompts(params, tokenizers, seed=0)
    kept = set(params.names) - set(dropped["word"])
    assert set(dropped["word"]) <= set(params.names) and len(kept) >= params.min_names
    clean, ref = (table[table["role"] == role].set_index("pair_id").sort_index() for role in ("clean", "ref"))
    assert len(clean) == 12 and (table["template_id"] == 0).all()
    for pair_id, row in clean.iterrows():
        b, a = row["metric_words"]
        assert a != b and {a, b} <= kept and row["metric_weights"] == [1.0, -1.0]
        assert row["text"] == params.template.format(A=a, B=b)
        c = (set(ref.at[pair_id, "context_words"]) - {a, b}).pop()
        assert ref.at[pair_id, "text"] == params.template.replace("{A}", "{C}", 2).replace("{C}", "{A}", 1).format(
            A=a, B=b, C=c)


def test_the_run_metadata_names_a_users_task_by_its_name(examples_on_path) -> None:
    """`tasks` may give a task by import path; the tables and the run's metadata name it by its name."""
    from base_params import settings

    from ioi_anti.run.metadata import run_metadata

    per_head = pd.DataFrame({"model": ["m"], "family": ["gpt2"], "tuning": ["base"], "quantisation": ["none"],
                             "n_params": [1], "n_layers": [1],
                             "n_heads": [1], "n_prompts_ioi": [3], "n_prompts_agreement": [4]})
    base = settings()
    metadata = run_metadata(per_head, ["ioi", "agreement_task:agreement"], ["m"], base.runtime, base.head_ablation, 0)
    assert metadata["tasks"] == ["ioi", "agreement"] and metadata["n_prompts_agreement"] == 4
