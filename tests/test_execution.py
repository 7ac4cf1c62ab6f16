"""Where per-model jobs run: in process, lazily and in key order; on a Dask cluster, saved as they arrive.

The cluster here is an in-process one (threads), which is enough to test ordering and failures in
seconds; the end-to-end tests run real worker processes (test_end_to_end.py).
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from base_params import raw_params, settings, with_
from distributed import Client, Event, LocalCluster
from kedro.io.core import DatasetError

from ioi_anti import execution
from ioi_anti.execution import (
    ClusterJobError,
    ClusterResults,
    Job,
    LocalResults,
    cluster_problems,
    resident,
    worker_environments,
)
from ioi_anti.run.datasets import ResumablePartitionedDataset
from ioi_anti.run.validation import settings_problems

CALLS: list[str] = []


def frame(name: str) -> pd.DataFrame:
    CALLS.append(name)
    return pd.DataFrame({"name": [name]})


def slow_frame(name: str, event: str) -> pd.DataFrame:
    """Waits until the test sets ``event``: a job that finishes after the others."""
    Event(event).wait(timeout=30)
    return frame(name)


def failing(name: str) -> pd.DataFrame:
    raise ValueError(f"{name} cannot be measured")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as dask_client:
        yield dask_client


def test_in_process_jobs_run_lazily_in_key_order_and_release_the_models_state() -> None:
    CALLS.clear()
    resident("m__fp", object())
    results = LocalResults({"m/b": Job("m", frame, ("b",)), "m/a": Job("m", frame, ("a",))}, "test")
    assert CALLS == []  # nothing runs until the dataset asks
    assert [key for key, _ in results.arrivals()] == ["m/a", "m/b"] and CALLS == ["a", "b"]
    assert execution._RESIDENT == {}


def test_a_process_keeps_one_models_state_at_a_time() -> None:
    first, second = object(), object()
    assert resident("a", first) is first and resident("a", object()) is first
    assert resident("b", second) is second and set(execution._RESIDENT) == {"b"}
    execution.release()


def test_cluster_results_are_saved_as_they_arrive(client: Client, tmp_path: Path) -> None:
    """The job of the first key waits until the others are saved: in key order it would block them."""
    CALLS.clear()
    dataset = ResumablePartitionedDataset(path=str(tmp_path), dataset="pandas.ParquetDataset",
                                          filename_suffix=".parquet")
    event = f"release-{time.time()}"
    jobs = {"m/a": Job("m", slow_frame, ("a", event)), "m/b": Job("m", frame, ("b",)),
            "n/c": Job("n", frame, ("c",))}
    results = ClusterResults(client, jobs, "test")
    saved: list[str] = []

    def release_when_others_are_saved() -> None:
        while len(list(tmp_path.rglob("*.parquet"))) < 2:
            time.sleep(0.05)
        saved.extend(sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")))
        Event(event, client=client).set()

    watcher = threading.Thread(target=release_when_others_are_saved)
    watcher.start()
    dataset.save(results)
    watcher.join()
    assert saved == ["m/b.parquet", "n/c.parquet"]
    assert {key: load()["name"].item() for key, load in dataset.load().items()} == {"m/a": "a", "m/b": "b", "n/c": "c"}


def test_a_failed_cluster_job_names_its_model_after_the_rest_are_saved(client: Client, tmp_path: Path) -> None:
    dataset = ResumablePartitionedDataset(path=str(tmp_path), dataset="pandas.ParquetDataset",
                                          filename_suffix=".parquet")
    jobs = {"m/a": Job("m", failing, ("a",)), "n/b": Job("n", frame, ("b",)), "n/c": Job("n", frame, ("c",))}
    with pytest.raises(DatasetError, match=r"(?s)1 of 3 jobs failed.*models: m\).*m/a: ValueError: a cannot be "
                                              r"measured.*re-run the same command"):
        dataset.save(ClusterResults(client, jobs, "test"))
    assert set(dataset.load()) == {"n/b", "n/c"}


def test_bad_cluster_settings_are_named_with_what_to_do(monkeypatch) -> None:
    base = settings().runtime
    assert cluster_problems(base) == []
    assert cluster_problems(base.model_copy(update={"cluster": "tcp://10.0.0.1:8786"})) == []
    (problem,) = cluster_problems(base.model_copy(update={"cluster": "10.0.0.1:8786"}))
    assert "tcp://host:8786" in problem
    (problem,) = settings_problems(with_(with_(raw_params(), "runtime.workers", 0), "runtime.cluster", "local"))
    assert "`runtime.workers` = 0: must be an integer >= 1 (CPU workers of a local cluster)" in problem
    assert "own" in cluster_problems(base.model_copy(update={"cluster": "local", "device": "cuda:1"}))[0]
    real_import = builtins.__import__

    def no_dask(name: str, *args, **kwargs):  # noqa: ANN202 - the signature of __import__
        if name == "distributed":
            raise ImportError("No module named 'distributed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    assert cluster_problems(base.model_copy(update={"cluster": "local"})) == [
        "`runtime.cluster` = 'local' needs Dask, an optional extra: `pip install -e \".[cluster]\"`"]


def test_a_remote_clusters_cuda_is_checked_on_its_workers_not_here() -> None:
    """A laptop without CUDA may drive GPU workers: `cuda` is then checked when the cluster connects."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base = raw_params()
    (problem,) = settings_problems(with_(base, "runtime.device", "cuda"))
    assert "no CUDA device" in problem
    remote = with_(with_(base, "runtime.device", "cuda"), "runtime.cluster", "tcp://gpu-box:8786")
    assert settings_problems(remote) == []


def test_workers_that_differ_from_the_driver_are_refused(client: Client, monkeypatch) -> None:
    facts = execution._worker_facts("cpu")
    execution._check_workers(client, "cpu")
    monkeypatch.setattr(client, "run", lambda fn, *args: {"tcp://gpu-box:1234": facts | {"device": "cuda"}})
    with pytest.raises(ClusterJobError, match=r"tcp://gpu-box:1234: device cuda \(here: cpu\)"):
        execution._check_workers(client, "cpu")


def test_a_local_cluster_gives_each_gpu_its_own_worker_and_shares_out_the_cores() -> None:
    gpus = worker_environments(gpus=4, visible=None, cpu_workers=2, cores=16)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in gpus] == ["0", "1", "2", "3"]
    assert {env["OMP_NUM_THREADS"] for env in gpus} == {"4"}
    chosen = worker_environments(gpus=2, visible="5,7", cpu_workers=2, cores=16)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in chosen] == ["5", "7"]
    cpus = worker_environments(gpus=0, visible=None, cpu_workers=3, cores=2)
    assert len(cpus) == 3 and all("CUDA_VISIBLE_DEVICES" not in env and env["OMP_NUM_THREADS"] == "1" for env in cpus)
