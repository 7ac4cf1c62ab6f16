"""Faults a long run meets: a full disk or a kill mid-write, damaged partitions, settings that must be honoured."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from base_params import raw_params, with_
from kedro.io.core import DatasetError
from kedro_datasets.pandas import ParquetDataset

from ioi_anti.measure.ablation import AblationValues
from ioi_anti.measure.partitions import baseline_problem, partition_problem
from ioi_anti.params import RunSettings
from ioi_anti.run import stages as run_settings
from ioi_anti.run.datasets import ResumablePartitionedDataset

N_HEADS, LAYERS = 3, 4
PAIRS = {"ioi": np.array([0, 1, 2]), "anti": np.array([5, 6])}


def _sweep_rows(layers: list[int], heads: range = range(N_HEADS)) -> pd.DataFrame:
    rows = [{"task": task, "layer": layer, "head": head, "pair_id": int(pair), "effect": 0.1, "method": "exact"}
            for task, ids in PAIRS.items() for layer in layers for head in heads for pair in ids]
    return pd.DataFrame(rows)


def _dataset(root: Path) -> ResumablePartitionedDataset:
    return ResumablePartitionedDataset(path=str(root), dataset="pandas.ParquetDataset", filename_suffix=".parquet")


def test_a_partition_is_whole_or_absent_when_the_disk_fills_mid_write(tmp_path: Path, monkeypatch) -> None:
    dataset = _dataset(tmp_path / "sweep")
    dataset.save({"m__fp/layer_000": _sweep_rows([0])})
    real_save = ParquetDataset.save

    def full_disk(self: ParquetDataset, data: pd.DataFrame) -> None:
        Path(self._filepath).write_bytes(b"PAR1 half a file")  # what a writer leaves when the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ParquetDataset, "save", full_disk)
    with pytest.raises(DatasetError, match="No space left"):
        dataset.save({"m__fp/layer_001": lambda: _sweep_rows([1])})
    monkeypatch.setattr(ParquetDataset, "save", real_save)
    assert sorted(p.name for p in (tmp_path / "sweep" / "m__fp").iterdir()) == ["layer_000.parquet"]
    assert set(_dataset(tmp_path / "sweep").load()) == {"m__fp/layer_000"}


def test_what_a_killed_run_left_half_written_is_removed_and_named(tmp_path: Path, caplog) -> None:
    dataset = _dataset(tmp_path / "sweep")
    dataset.save({"m__fp/layer_000": _sweep_rows([0])})
    leftover = tmp_path / "sweep" / "m__fp" / "layer_001.parquet.partial-4242"
    leftover.write_bytes(b"PAR1 half")
    with caplog.at_level(logging.WARNING):
        assert set(_dataset(tmp_path / "sweep").load()) == {"m__fp/layer_000"}
    assert not leftover.exists() and "layer_001.parquet.partial-4242" in caplog.text


def test_a_fresh_folder_loads_as_nothing_done(tmp_path: Path) -> None:
    assert _dataset(tmp_path / "absent").load() == {}
    (tmp_path / "empty").mkdir()
    assert _dataset(tmp_path / "empty").load() == {}


def test_a_whole_partition_passes_and_every_kind_of_damage_is_named(tmp_path: Path) -> None:
    whole = _sweep_rows([2])
    check = lambda frame, every=True: partition_problem(lambda: frame, [2], N_HEADS, PAIRS, every)  # noqa: E731
    assert check(whole) is None
    assert check(whole[whole["head"] != 1], every=False) is None  # screening measures a subset of heads
    assert "2 of 3 heads" in check(whole[whole["head"] != 1])
    assert "outside the grid" in check(_sweep_rows([2, 3]))
    assert "holds 2 rows for 3 prompts" in check(whole.drop(index=0))
    assert "holds 4 rows for 3 prompts" in check(pd.concat([whole, whole.iloc[:1]]))
    truncated = tmp_path / "layer.parquet"
    whole.to_parquet(truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    problem = partition_problem(lambda: pd.read_parquet(truncated), [2], N_HEADS, PAIRS, True)
    assert problem.startswith("unreadable (")
    baseline = pd.DataFrame({"task": ["ioi"] * 3 + ["anti"] * 2, "pair_id": [2, 0, 1, 6, 5]})
    assert baseline_problem(lambda: baseline, PAIRS) is None
    assert "anti: 1 rows for 2 prompts" in baseline_problem(lambda: baseline.iloc[:4], PAIRS)


def _typed(params: dict) -> RunSettings:
    return RunSettings.model_validate(params)


def test_a_settings_id_survives_a_csv_round_trip() -> None:
    """Ids are hex digests: one of digits and a single "e" (e.g. 12e456789012) would be read back from a
    CSV table (hero_heads_for_paper) as a float, inf, and refused as other settings."""
    import io

    ids = run_settings.stage_ids(_typed(raw_params()))[0]
    for stage_id in [*ids.values(), "s" + "12e456789012"]:
        assert stage_id.startswith("s")
        frame = pd.read_csv(io.StringIO(pd.DataFrame({run_settings.COLUMN: [stage_id]}).to_csv(index=False)))
        assert frame[run_settings.COLUMN].iloc[0] == stage_id


def test_each_seed_changes_what_it_names_and_nothing_else(smol_tokenizer, dg_params) -> None:
    """data_generation.seed draws the prompts; head_ablation.seed the resample ablation; seed the bootstrap."""
    from ioi_anti.measure.head_table import model_head_table
    from ioi_anti.pipelines.data_generation.nodes import make_prompts

    registry = _typed(raw_params()).model_registry
    prompts, _ = make_prompts(["ioi", "anti"], ["smollm2-135m"], registry, dg_params)
    assert make_prompts(["ioi", "anti"], ["smollm2-135m"], registry, dg_params)[0].equals(prompts)
    other, _ = make_prompts(["ioi", "anti"], ["smollm2-135m"], registry, dg_params.model_copy(update={"seed": 1}))
    for task in ("ioi", "anti"):
        assert not other.loc[other["task"] == task, "text"].equals(prompts.loc[prompts["task"] == task, "text"])

    rng = np.random.default_rng(0)
    baseline = pd.DataFrame([{"task": t, "pair_id": i, "m_clean": 3 + rng.normal(), "m_ref": rng.normal(),
                              "model_id": "m", "family": "gpt2", "tuning": "base", "quantisation": "none",
                              "n_params": 1, "n_layers": 1,
                              "n_heads": 2}
                             for t in ("ioi", "anti") for i in range(8)])
    long = pd.DataFrame([{"task": t, "layer": 0, "head": h, "pair_id": i, "method": m, "effect": rng.normal()}
                         for t in ("ioi", "anti") for m in ("exact", "attribution") for h in (0, 1) for i in range(8)])
    first, other = (model_head_table(long, baseline, ["ioi", "anti"], 200, 0.95, seed=seed) for seed in (0, 1))
    pd.testing.assert_series_equal(first["delta_ioi"], other["delta_ioi"])
    assert not np.allclose(first["delta_ioi_low"], other["delta_ioi_low"])

    base = raw_params()
    ids = run_settings.stage_ids(_typed(base))[0]
    for dotted, value, changed in [
        ("data_generation.seed", 1, set(run_settings.STAGES)),
        ("head_ablation.seed", 1, set()),  # mean ablation draws nothing
        ("seed", 1, set(run_settings.STAGES)),
        ("categorisation.tau", 0.04, {"categorisation", "hero_heads", "reporting"}),
        ("runtime.max_batch", 8, set()),
        ("reporting.font_size", 9, {"reporting"}),
    ]:
        now = run_settings.stage_ids(_typed(with_(base, dotted, value)))[0]
        assert {stage for stage in ids if ids[stage] != now[stage]} == changed, dotted
    resample = with_(base, "head_ablation.ablation", "resample")
    now = run_settings.stage_ids(_typed(with_(resample, "head_ablation.seed", 1)))[0]
    assert now["data_generation"] == run_settings.stage_ids(_typed(resample))[0]["data_generation"]
    assert now["head_ablation"] != run_settings.stage_ids(_typed(resample))[0]["head_ablation"]


def test_resample_ablation_follows_its_seed_and_mean_ablation_ignores_it(smol_tokenizer, tokens_by_task) -> None:
    from tiny_models import tiny_model

    from ioi_anti.measure.ablation import make_groups
    from ioi_anti.tasks import load_task

    lm = tiny_model("gpt2", smol_tokenizer)
    tokens = tokens_by_task["ioi"]
    group = make_groups(tokens[tokens["role"] == "clean"], lm.device)[0]
    pool = make_groups(tokens[tokens["role"].isin(load_task("ioi").ablation_roles)], lm.device)
    values = {(kind, seed): AblationValues(kind, lm, pool, seed).for_group(group)
              for kind in ("mean", "resample") for seed in (0, 1)}
    assert torch.equal(values[("mean", 0)], values[("mean", 1)])
    assert not torch.equal(values[("resample", 0)], values[("resample", 1)])
    assert torch.equal(values[("resample", 0)], AblationValues("resample", lm, pool, 0).for_group(group))


def test_every_bad_setting_is_named_at_once_with_what_to_do() -> None:
    from ioi_anti.run.validation import SettingsError, settings_problems, validate_settings

    base = raw_params()
    assert settings_problems(base) == []
    bad = with_(base, "categorisation.tau", 0)
    bad = with_(bad, "data_generation.ioi.nprompts", 5)
    bad = with_(bad, "runtime.max_batch", 0)
    bad = with_(bad, "data_generation.ioi.min_names", 2)
    bad = with_(bad, "hero_heads.named", {"smollm2-135m": ["L3H1", "layer3"], "smolm2-135m": ["L1H1"]})
    bad = with_(bad, "head_ablation.ablation", "zeros")
    problems = settings_problems(bad)
    expected = ["did you mean `data_generation.ioi.n_prompts`", "`runtime.max_batch` = 0",
                "three different names", "`categorisation.tau` = 0", "'layer3' is not of the form",
                "did you mean 'smollm2-135m'", "one of mean, zero, resample"]
    assert len(problems) == len(expected) and all(any(e in p for p in problems) for e in expected), problems
    with pytest.raises(SettingsError, match="7 problem"):
        validate_settings(bad)
    (problem,) = settings_problems(with_(base, "models", "smollm2-135m"))
    assert "is a string, not a list" in problem and "models=[smollm2-135m]" in problem
    for bad_gb in (-1, "4GB", True):
        (problem,) = settings_problems(with_(base, "runtime.keep_loaded_gb", bad_gb))
        assert "`runtime.keep_loaded_gb`" in problem and "a number of GB >= 0" in problem
    (problem,) = settings_problems(with_(base, "runtime.dtype", "float64"))
    assert "`runtime.dtype` = 'float64'" in problem and "one of float32, bfloat16, float16" in problem
    (problem,) = settings_problems(with_(base, "head_ablation.delta", "logits"))
    assert "`head_ablation.delta` = 'logits'" in problem and "one of normalised, raw" in problem
    (problem,) = settings_problems(with_(with_(base, "head_ablation.delta", "raw"), "head_ablation.mode", "screen"))
    assert "needs `head_ablation.mode` = 'exact'" in problem
    (problem,) = settings_problems(with_(base, "data_generation.paper_anti.min_names", 2))
    assert "`data_generation.paper_anti.min_names` = 2" in problem
    (problem,) = settings_problems(with_(base, "quantisation.models", ["gemma3-270m", "qwen2.5-coder-1.5b"]))
    assert "`quantisation.models` names 'qwen2.5-coder-1.5b', not among this run's models" in problem
    (problem,) = settings_problems(with_(base, "quantisation.models", []))
    assert "`quantisation.models`" in problem and "null (every model of the run)" in problem
    assert settings_problems(with_(base, "quantisation.models", ["gemma3-270m"])) == []
    (problem,) = settings_problems(with_(base, "runtime.tf32", "yes"))
    assert "`runtime.tf32` = 'yes'" in problem and "true or false" in problem
    if not torch.cuda.is_available():
        (problem,) = settings_problems(with_(base, "runtime.device", "cuda"))
        assert "no CUDA device" in problem and "runtime.device=auto" in problem


def test_a_model_of_your_own_gets_what_to_do_for_every_mistake() -> None:
    """An entry of one's own with an unknown family, no BOS setting, no quantisation or licence, or a GGUF type on
    a Hub model: one message naming each problem, what it must be, and conf/local as its place."""
    from ioi_anti.run.validation import SettingsError, validate_settings

    base = raw_params()
    mine = {"family": "mistral", "source": "hub", "hf_name": "mistralai/Mistral-7B-v0.1"}
    with pytest.raises(SettingsError) as error:
        validate_settings(with_(with_(base, "model_registry.mine", mine), "models", ["mine"]))
    message = str(error.value)
    for expected in ("`model_registry.mine.family` = 'mistral': must be one of gpt2, gpt-neo", "docs/models.md",
                     "`model_registry.mine.prepend_bos` is missing (true or false",
                     "`model_registry.mine.quantisation` is missing", "`model_registry.mine.licence` is missing",
                     "conf/local/parameters.yml"):
        assert expected in message, message
    wrong = {**mine, "family": "llama", "prepend_bos": True, "quantisation": "Q4_0", "licence": "Apache-2.0"}
    with pytest.raises(SettingsError, match="`quantisation` is `none` for a Hub model"):
        validate_settings(with_(with_(base, "model_registry.mine", wrong), "models", ["mine"]))
    with pytest.raises(SettingsError, match="Unknown model id 'yours'.*conf/local/parameters.yml"):
        validate_settings(with_(base, "models", ["yours"]))


def test_named_heroes_of_a_model_outside_the_run_are_warned_loudly(caplog) -> None:
    from ioi_anti.run.validation import settings_problems

    params = with_(raw_params(), "hero_heads.named", {"gpt2": ["L9H9"]})
    with caplog.at_level(logging.WARNING):
        assert settings_problems(params) == []
    assert "gpt2" in caplog.text and "will NOT be studied" in caplog.text


def test_one_run_at_a_time_and_a_dead_runs_lock_is_taken_over(tmp_path: Path, caplog) -> None:
    from ioi_anti.run.hooks import RunLock, RunLockedError

    lock = RunLock(tmp_path)
    lock.acquire()
    with pytest.raises(RunLockedError, match="Another run is writing"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not lock.path.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": "earlier"}))
    with caplog.at_level(logging.WARNING):
        RunLock(tmp_path).acquire()
    assert "no longer running" in caplog.text and json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_the_guard_stamps_tables_and_records_only_and_refuses_other_settings(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from ioi_anti.run.hooks import RunGuard, SettingsMismatchError

    guard = RunGuard(dict)
    guard.project = tmp_path
    params = raw_params()
    guard.settings = _typed(params)
    guard.ids, full = run_settings.stage_ids(_typed(params))
    (tmp_path / "data" / ".settings").mkdir(parents=True)
    for stage, stage_id in guard.ids.items():
        (tmp_path / "data" / ".settings" / f"{stage_id}.json").write_text(json.dumps(full[stage], default=str))
    names = ["per_head", "tokenised_prompts", "layer_hists", "training_plots", "run_metadata", "baseline_partitions"]
    guard.stage_of = dict.fromkeys(names, "head_ablation")
    table, parts, record = pd.DataFrame({"x": [1]}), {"m": pd.DataFrame({"x": [1]})}, {"models": ["m"], "n": 3}
    figures, lazy = {"a": Figure()}, {"k": lambda: pd.DataFrame({"x": [1]})}
    for name, data in zip(names, [table, parts, figures, {}, record, lazy], strict=True):
        guard.before_dataset_saved(name, data)
    expected = guard.ids["head_ablation"]
    assert table["settings_id"].tolist() == [expected] and parts["m"]["settings_id"].tolist() == [expected]
    assert record["settings_id"] == expected
    assert set(figures) == {"a"} and "settings_id" not in lazy and "settings_id" not in lazy["k"]()
    assert guard.before_node_run({"per_head": table, "run_metadata": record}) is None

    other_ids, other_full = run_settings.stage_ids(_typed(with_(params, "head_ablation.ablation", "zero")))
    other = other_ids["head_ablation"]
    (tmp_path / "data" / ".settings" / f"{other}.json").write_text(json.dumps(other_full["head_ablation"], default=str))
    with pytest.raises(SettingsMismatchError, match=r"head_ablation\.ablation: 'zero' there, 'mean' now"):
        guard.before_node_run({"per_head": table.assign(settings_id=other)})
    wrapped = guard.before_node_run({"tokenised_prompts": {"m": lambda: parts["m"].assign(settings_id=other)}})
    with pytest.raises(SettingsMismatchError, match="kedro run --pipelines head_ablation"):
        wrapped["tokenised_prompts"]["m"]()


def test_a_named_hero_head_outside_the_grid_fails_before_any_model_loads() -> None:
    """The grid comes from the model's config (here the embedded SmolLM2's GGUF header), so a bad head
    fails when the run starts; heads named for models outside the run are not read."""
    from ioi_anti.hero.effects import check_named_heads
    from ioi_anti.run.validation import check_named_hero_grids

    check_named_heads({"m": ["L29H8"], "other": ["L99H0"]}, {"m": (30, 9)})
    with pytest.raises(ValueError, match=r"L2H9 is outside m's grid \(30 layers x 9 heads\)"):
        check_named_heads({"m": ["L2H9"]}, {"m": (30, 9)})
    params = with_(raw_params(), "models", ["smollm2-135m"])
    check_named_hero_grids(_typed(with_(params, "hero_heads.named", {"smollm2-135m": ["L29H8"], "gpt2": ["L99H0"]})))
    with pytest.raises(ValueError, match=r"L30H0 is outside smollm2-135m's grid \(30 layers x 9 heads\)"):
        check_named_hero_grids(_typed(with_(params, "hero_heads.named", {"smollm2-135m": ["L30H0"]})))


def test_a_mismatch_names_the_first_step_to_re_run() -> None:
    params = raw_params()
    saved = run_settings.stage_ids(_typed(with_(params, "data_generation.seed", 3)))[1]["reporting"]
    assert run_settings.first_changed("reporting", _typed(params), saved) == "data_generation"
    saved = run_settings.stage_ids(_typed(with_(params, "hero_heads.max_prompts", 3)))[1]["reporting"]
    assert run_settings.first_changed("reporting", _typed(params), saved) == "hero_heads"
    saved = run_settings.stage_ids(_typed(with_(params, "categorisation.tau", 0.04)))[1]["categorisation"]
    assert run_settings.first_changed("categorisation", _typed(params), saved) == "categorisation"
    assert run_settings.ancestors("hero_heads") == ["data_generation", "head_ablation", "hero_heads"]
