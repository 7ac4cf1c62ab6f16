"""Project hooks: check every setting before work starts, keep one run at a time, never mix runs.

:class:`RunGuard` is registered in ``settings.py``. As soon as Kedro has read the configuration it
validates all settings (:mod:`ioi_anti.run.validation`); before a pipeline runs it takes the project's
run lock; while it runs, it stamps each saved table with the id of the settings it was computed from,
and checks each loaded table's stamp against the current settings (:mod:`ioi_anti.run.stages`). Hooks,
not node code, because the same checks must hold for every pipeline and every way of running one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.framework.hooks import hook_impl

from ioi_anti import execution
from ioi_anti.models.loading import release_models
from ioi_anti.params import RunSettings
from ioi_anti.run import stages as run_settings
from ioi_anti.run.validation import check_named_hero_grids, validate_settings

logger = logging.getLogger(__name__)
LOCK_NAME = ".run.lock"
SETTINGS_DIR = ".settings"
JSON_VALUES = (str, int, float, bool, list, dict, type(None))
REPORTS = {"report": "Report", "report_html": "Report (one page, figures embedded)", "toy_report": "Toy-model report"}


class RunLockedError(RuntimeError):
    """Another run of the same project is writing its data folder."""


class SettingsMismatchError(RuntimeError):
    """A saved result was computed with other settings than the current run's."""


class RunLock:
    """``data/.run.lock``: created exclusively, holding the owner's host, pid and command.

    A lock whose process is gone (killed, or interrupted with Ctrl-C) is taken over with a warning;
    a live one, or one from another host (whose process cannot be checked), refuses the run.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)}
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(descriptor, "w") as file:
                json.dump(record, file)
            return
        raise RunLockedError(f"Could not take the run lock {self.path}.")

    def _take_over_if_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            owner = {}
        alive = owner.get("host") != socket.gethostname() or _pid_alive(int(owner.get("pid", -1)))
        if alive:
            raise RunLockedError(
                f"Another run is writing this project's data/ (pid {owner.get('pid')} on {owner.get('host')}, "
                f"started {owner.get('started')}: `{owner.get('command')}`). Two runs at once would interleave "
                f"their outputs. Wait for it to finish or stop it; if it is not running any more, delete {self.path}."
            )
        logger.warning("Taking over %s, left by a run that is no longer running (pid %s, started %s).",
                       self.path, owner.get("pid"), owner.get("started"))
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunGuard:
    """Validate settings and lock before a run; stamp what is saved and check what is loaded during it."""

    def __init__(self, stage_outputs: Callable[[], Mapping[str, set[str]]]) -> None:
        """``stage_outputs``: every stage's output datasets, whichever pipelines the run asked for (given by
        the project's pipeline registry, the one layer that knows the pipelines)."""
        self.stage_outputs = stage_outputs
        self.project: Path | None = None
        self.ids: dict[str, str] = {}
        self.stage_of: dict[str, str] = {}
        self.lock: RunLock | None = None
        self.unstamped: set[str] = set()
        self.settings: RunSettings | None = None
        self.report_paths: dict[str, str] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Validate every setting as soon as Kedro has read them: before it builds the catalog, where its
        own parameter validation instantiates the typed groups the nodes take."""
        self.project = Path(context.project_path)
        self.settings = validate_settings(context.config_loader["parameters"])
        catalog = context.config_loader["catalog"]
        self.report_paths = {name: catalog[name]["filepath"] for name in REPORTS if name in catalog}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        project = self.project or Path.cwd()
        if self.settings is None:
            raise RuntimeError("RunGuard: the settings were not validated (after_context_created did not run).")
        check_named_hero_grids(self.settings)
        self.ids, full = run_settings.stage_ids(self.settings)
        self.stage_of = {name: stage for stage, outputs in self.stage_outputs().items() for name in outputs}
        self.lock = RunLock(project / "data")
        self.lock.acquire()
        record_dir = project / "data" / SETTINGS_DIR
        record_dir.mkdir(parents=True, exist_ok=True)
        for stage, stage_id in self.ids.items():
            path = record_dir / f"{stage_id}.json"
            if not path.exists():  # written whole or not at all, like every other saved file
                partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
                partial.write_text(json.dumps(full[stage], sort_keys=True, indent=1, default=str))
                partial.replace(path)

    @hook_impl
    def after_pipeline_run(self, pipeline: Any) -> None:
        """Release the lock, and say where the run's report was written (its newest version)."""
        if self.lock:
            self.lock.release()
        project = self.project or Path.cwd()
        for name in REPORTS:
            if name in pipeline.all_outputs() and name in self.report_paths:
                versions = sorted((project / self.report_paths[name]).glob("*"))
                if versions:
                    written = versions[-1] / Path(self.report_paths[name]).name
                    logger.info("%s written: %s", REPORTS[name], written.relative_to(project))

    @hook_impl
    def on_pipeline_error(self) -> None:
        if self.lock:
            self.lock.release()

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data: Any) -> None:
        """Stamp a table (or each table of a partitioned output, or a JSON record) with its stage's id."""
        stage_id = self.ids.get(self.stage_of.get(dataset_name, ""))
        if stage_id is None:
            return
        if isinstance(data, pd.DataFrame):
            data[run_settings.COLUMN] = stage_id
        elif isinstance(data, dict) and data and all(isinstance(v, pd.DataFrame) for v in data.values()):
            for frame in data.values():
                frame[run_settings.COLUMN] = stage_id
        elif isinstance(data, dict) and data and all(isinstance(v, JSON_VALUES) for v in data.values()):
            data[run_settings.COLUMN] = stage_id  # a JSON record (run metadata), not a dict of figures

    @hook_impl
    def before_node_run(self, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Check the stamp of every loaded result; partitions are checked when they are loaded."""
        lazy: dict[str, Any] = {}
        for name, value in inputs.items():
            # an empty partitioned output (a run without checkpoints draws no training figure) holds nothing to check
            if name not in self.stage_of or name.startswith("params:") or (isinstance(value, dict) and not value):
                continue
            if isinstance(value, dict) and all(callable(v) for v in value.values()):
                lazy[name] = {key: self._checked(name, key, load) for key, load in value.items()}
            else:
                self._check(name, value)
        return lazy or None

    def _checked(self, name: str, key: str, load: Callable[[], Any]) -> Callable[[], Any]:
        def checked_load() -> Any:
            value = load()
            self._check(f"{name}/{key}", value, stage=self.stage_of[name], partition=True)
            return value
        return checked_load

    def _check(self, name: str, value: Any, stage: str | None = None, partition: bool = False) -> None:
        stage = stage or self.stage_of[name]
        if isinstance(value, pd.DataFrame):
            stamps = set(value[run_settings.COLUMN]) if run_settings.COLUMN in value.columns else set()
        elif isinstance(value, Mapping):
            stamps = {value[run_settings.COLUMN]} if run_settings.COLUMN in value else set()
        else:
            return
        if not stamps:
            if not partition and name not in self.unstamped:
                self.unstamped.add(name)
                logger.warning("`%s` carries no settings stamp (saved by an older version): it cannot be checked "
                               "against this run's settings; re-run `kedro run --pipelines %s` to stamp it.",
                               name, stage)
            return
        expected = self.ids[stage]
        if stamps != {expected}:
            raise SettingsMismatchError(self._mismatch(name, stage, sorted(stamps)[0], expected))

    def _mismatch(self, name: str, stage: str, saved_id: str, expected: str) -> str:
        record_dir = (self.project or Path.cwd()) / "data" / SETTINGS_DIR
        saved_path, now = record_dir / f"{saved_id}.json", json.loads((record_dir / f"{expected}.json").read_text())
        saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
        lines = (run_settings.differences(saved, now) if saved
                 else [f"the settings {saved_id} are not recorded in {record_dir}"])
        start = run_settings.first_changed(stage, self.settings, saved) if saved and self.settings else stage
        listed = "\n".join(f"  - {line}" for line in lines)
        return (f"`{name}` (its latest saved version) was computed with other settings than this run's:\n{listed}\n"
                f"Re-run from the first step these settings change, with the settings you want: "
                f"`kedro run --pipelines {start}`, then the steps after it; or run everything with `kedro run`.")


class ClusterLifetime:
    """Close the Dask cluster a run started (``runtime.cluster``), and release the models the run kept
    loaded, when the run ends, however it ends."""

    @hook_impl
    def after_pipeline_run(self) -> None:
        execution.close()
        release_models()

    @hook_impl
    def on_pipeline_error(self) -> None:
        execution.close()
        release_models()
