"""Where per-model work runs: in this process (the default) or on a Dask cluster (``runtime.cluster``).

A study is many independent models, so the unit of work is a :class:`Job`: one model's baseline,
one layer of its head sweep, or its hero studies. Nodes build jobs and hand them to
:func:`run_jobs`; what comes back maps each job's key to its result and yields the results in
the order they arrive (:meth:`Results.arrivals`). The project's partitioned datasets save each
partition as it arrives, so an interrupted run, in process or on a cluster, keeps every finished
partition and a re-run computes only the rest.

Why this integration and not Kedro's Dask runner recipe: that recipe ships whole nodes and the
``MemoryDataset`` between them to workers, which breaks under Kedro 1.x (kedro issues #5773 and
#5774: a dataset that does not survive pickling reaches the next node as a bare ``object()``),
and it could not help anyway: a study's parallelism is *inside* its nodes, across models and
layers. Here Kedro still runs the pipeline in one process, the catalog loads and saves on that
machine only, and only the per-model jobs travel. Workers never touch ``data/``: results come
back to the driver, which saves them through the catalog.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ioi_anti.params import Runtime

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

INSTALL = 'pip install -e ".[cluster]"'
LOCAL = "local"
ADDRESS_SCHEMES = ("tcp://", "tls://")
# Packages whose version must match between the driver and every worker (with ioi_anti's own): the
# numbers depend on them.
SAME_VERSIONS = ("torch", "transformers", "transformer-lens")


@dataclass(frozen=True)
class Job:
    """One unit of per-model work, ``fn(*args)``: a module-level function and picklable arguments, so
    that it can run in another process or on another machine."""

    model_id: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]

    def __call__(self) -> Any:
        return self.fn(*self.args)


class Results(dict):
    """Job results by key. Each value is a callable returning that job's result (the lazy form Kedro's
    partitioned datasets save); :meth:`arrivals` yields ``(key, result)`` as results become available."""

    def arrivals(self) -> Iterator[tuple[str, Any]]:
        raise NotImplementedError


class LocalResults(Results):
    """Jobs run in this process, one at a time in key order, when their result is asked for."""

    def __init__(self, jobs: Mapping[str, Job], desc: str) -> None:
        self.progress = _Progress(jobs, desc)
        super().__init__({key: self._runner(key, job) for key, job in jobs.items()})

    def _runner(self, key: str, job: Job) -> Callable[[], Any]:
        def run() -> Any:
            try:
                return job()
            finally:
                self.progress.done(key)
        return run

    def arrivals(self) -> Iterator[tuple[str, Any]]:
        try:
            for key in sorted(self):
                yield key, self[key]()
        finally:
            release()


class ClusterResults(Results):
    """Jobs submitted to a Dask cluster at once; results yielded as they finish.

    Each model's jobs go preferably to one worker (round robin over the workers), which loads the
    model once and keeps its per-model state between jobs; ``allow_other_workers`` lets an idle worker
    take over and lets the scheduler move the work of a worker that died. A job that fails, or whose
    workers keep dying (``distributed.scheduler.allowed-failures``), does not stop the others: every
    result that arrives is saved, then :class:`ClusterJobError` names what is missing.
    """

    def __init__(self, client: Client, jobs: Mapping[str, Job], desc: str) -> None:
        self.client, self.jobs, self.progress = client, dict(jobs), _Progress(jobs, desc)
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        models = sorted({job.model_id for job in jobs.values()})
        home = {model: workers[i % len(workers)] for i, model in enumerate(models)}
        self.futures = {key: client.submit(_run, job, key=f"{desc}:{key}", workers=[home[job.model_id]],
                                           allow_other_workers=True, pure=False)
                        for key, job in sorted(jobs.items())}
        super().__init__({key: future.result for key, future in self.futures.items()})

    def arrivals(self) -> Iterator[tuple[str, Any]]:
        from distributed import as_completed

        key_of = {future.key: key for key, future in self.futures.items()}
        failed: dict[str, BaseException] = {}
        try:
            for future in as_completed(list(self.futures.values())):
                key = key_of[future.key]
                self.progress.done(key)
                if future.status == "finished":
                    result = future.result()
                    future.release()
                    yield key, result
                else:
                    failed[key] = future.exception()
        finally:
            self.client.run(release)
        if failed:
            raise ClusterJobError(self._failure(failed))

    def _failure(self, failed: Mapping[str, BaseException]) -> str:
        models = sorted({self.jobs[key].model_id for key in failed})
        key, error = next(iter(failed.items()))
        return (f"{len(failed)} of {len(self.jobs)} jobs failed on the cluster (models: {', '.join(models)}); "
                f"the first, {key}: {type(error).__name__}: {error}. The partitions that arrived (baselines, "
                f"sweep layers) are saved: re-run the same command to compute only what is missing.")


class ClusterJobError(RuntimeError):
    """Jobs that did not finish on the cluster (the rest were saved)."""


def _run(job: Job) -> Any:
    """A job on a worker (a module-level function, so Dask pickles it by reference)."""
    return job()


class _Progress:
    """A progress bar per model with several jobs (a bar of one step says nothing), and a log line when a
    model's last job is done."""

    def __init__(self, jobs: Mapping[str, Job], desc: str) -> None:
        self.model_of = {key: job.model_id for key, job in jobs.items()}
        self.left = {model: list(self.model_of.values()).count(model) for model in set(self.model_of.values())}
        self.desc, self.bars, self.finished = desc, {}, 0

    def done(self, key: str) -> None:
        model = self.model_of[key]
        self.left[model] -= 1
        if model not in self.bars and self.left[model]:
            self.bars[model] = tqdm(total=self.left[model] + 1, desc=f"{model} {self.desc}", unit="job")
        if model in self.bars:
            self.bars[model].update(1)
        if not self.left[model]:
            if model in self.bars:
                self.bars[model].close()
            self.finished += 1
            logger.info("%s: %s done (%d of %d models).", model, self.desc, self.finished, len(self.left))


# -- per-process state kept between the jobs of one model ----------------------------------------

_RESIDENT: dict[str, Any] = {}


def resident(key: str, value: Any) -> Any:
    """The object this process keeps for ``key`` (``value`` itself the first time).

    One model's state at a time (its clean passes can take gigabytes): a new key drops the last,
    closing it (the jobs of a step keep every model's state object alive until the step ends, so
    dropping the reference alone would free nothing). The jobs of one model, in process or on a
    worker, share the state this way instead of recomputing it for every layer.
    """
    if key not in _RESIDENT:
        release()
        _RESIDENT[key] = value
    return _RESIDENT[key]


def release() -> None:
    """Close and drop what :func:`resident` keeps (when another model's state comes, and after a step)."""
    for value in _RESIDENT.values():
        close_state = getattr(value, "close", None)
        if callable(close_state):
            close_state()
    _RESIDENT.clear()


# -- the cluster of a run ---------------------------------------------------------------------------

_CLIENT: dict[str, Client] = {}


def cluster_problems(runtime: Runtime) -> list[str]:
    """What is wrong with ``runtime.cluster`` (empty when fine): beyond its type, which the settings check."""
    cluster = runtime.cluster
    problems = []
    if cluster is not None and cluster != LOCAL and not str(cluster).startswith(ADDRESS_SCHEMES):
        problems.append(f"`runtime.cluster` = {cluster!r}: must be unset (null, in this process), `local` (a cluster "
                        "on this machine) or a scheduler address such as tcp://host:8786")
    elif cluster is not None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            problems.append(f"`runtime.cluster` = {cluster!r} needs Dask, an optional extra: `{INSTALL}`")
    device = runtime.device
    if cluster == LOCAL and device.startswith("cuda:"):
        problems.append(f"`runtime.device` = {device!r} with a local cluster: each worker gets one GPU of its own, "
                        "so use `auto` or `cuda`")
    return problems


def run_jobs(jobs: Mapping[str, Job], runtime: Runtime, desc: str) -> Results:
    """Run ``jobs`` where ``runtime.cluster`` says; nothing starts a cluster while there is nothing to do."""
    if not jobs or runtime.cluster is None:
        return LocalResults(jobs, desc)
    return ClusterResults(client_for(runtime), jobs, desc)


def client_for(runtime: Runtime) -> Client:
    """The run's Dask client: a local cluster started on first use, or the scheduler at the given address.

    Every worker must compute on the same kind of device as the driver expects (the device kind is
    part of every resume fingerprint) and run the same versions of the packages the numbers depend on.
    """
    cluster = runtime.cluster
    if cluster in _CLIENT:
        return _CLIENT[cluster]
    from distributed import Client

    if cluster == LOCAL:
        client = Client(_local_cluster(runtime.workers))
    else:
        logger.info("Connecting to the Dask scheduler at %s", cluster)
        client = Client(cluster, timeout="30s")
    _CLIENT[cluster] = client
    atexit.register(close)
    try:
        _check_workers(client, runtime.device)
    except Exception:
        close()
        raise
    n = len(client.scheduler_info(n_workers=-1)["workers"])
    logger.info("Dask cluster: %d workers; dashboard at %s", n, client.dashboard_link)
    return client


def _local_cluster(cpu_workers: int) -> Any:
    """A cluster on this machine, its workers as :func:`worker_environments` says."""
    import torch
    from distributed import Nanny, Scheduler, SpecCluster

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    environments = worker_environments(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"), cpu_workers, usable_cores())
    workers = {i: {"cls": Nanny, "options": {"nthreads": 1, "silence_logs": logging.ERROR, "env": env}}
               for i, env in enumerate(environments)}
    logger.info("Starting a local Dask cluster: %d workers (%s)", len(workers),
                "one per GPU" if gpus else f"CPU, {environments[0]['OMP_NUM_THREADS']} threads each")
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":8787"}},
                       silence_logs=logging.ERROR)


def worker_environments(gpus: int, visible: str | None, cpu_workers: int, cores: int) -> list[dict[str, str]]:
    """The environment of each local worker process: one worker per GPU, seeing only its own through
    ``CUDA_VISIBLE_DEVICES`` (as dask-cuda's ``LocalCUDACluster`` does, without that dependency; a
    ``CUDA_VISIBLE_DEVICES`` set here picks the GPUs), else ``cpu_workers`` workers; the cores are
    shared out as torch threads, one task at a time per worker."""
    devices = visible.split(",")[:gpus] if visible else [str(i) for i in range(gpus)]
    n = len(devices) or cpu_workers
    threads = str(max(1, cores // n))
    base = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TQDM_DISABLE": "1"}
    return [base | {"CUDA_VISIBLE_DEVICES": device} for device in devices] or [base] * cpu_workers


def usable_cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _worker_facts(device: str) -> dict[str, str]:
    """What a worker computes on, and the versions its numbers depend on."""
    import ioi_anti
    from ioi_anti.models.loading import resolve_device

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"device": resolve_device(device).type, "ioi_anti": ioi_anti.__version__,
            **{name: installed(name) for name in SAME_VERSIONS}}


def _check_workers(client: Client, device: str) -> None:
    workers = client.run(_worker_facts, device)
    if not workers:
        raise ClusterJobError(f"The Dask scheduler at {client.scheduler.address} has no workers: start some with "
                              f"`dask worker {client.scheduler.address}`.")
    here = _worker_facts(device)
    problems = [f"{address}: {name} {facts[name]} (here: {here[name]})"
                for address, facts in sorted(workers.items()) for name in here if facts[name] != here[name]]
    if problems:
        raise ClusterJobError("Dask workers differ from this machine in what the numbers depend on:\n  "
                              + "\n  ".join(problems) + "\nInstall the same versions on every worker; set "
                              "`runtime.device` to `cuda` or `cpu` when the workers have other devices than here.")


def close() -> None:
    """Close the run's client and the local cluster it started (the hooks call this when a run ends)."""
    for client in _CLIENT.values():
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    _CLIENT.clear()
