"""Faults a long run meets: a full disk or a kill mid-write, damaged partitions, settings that must be honoured."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError
from kedro_datasets.pandas import ParquetDataset

from ioi_anti.datasets import ResumablePartitionedDataset
from ioi_anti.sweep import baseline_problem, partition_problem

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
