"""Catalog dataset types the project adds to kedro-datasets."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from copy import deepcopy
from typing import Any

from kedro.io.core import get_filepath_str
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.partitions import PartitionedDataset

from ioi_anti.execution import Results
from ioi_anti.report.registry import SavedFigure

PARTIAL = ".partial-"
logger = logging.getLogger(__name__)


class ResumablePartitionedDataset(PartitionedDataset):
    """A ``PartitionedDataset`` whose partitions appear whole or not at all, and that loads as ``{}``
    while nothing has been saved.

    Each partition is written under a temporary name (``<file>.partial-<pid>``, which does not end in
    the partition suffix and so is never listed) and renamed when complete: a run killed mid-write, or
    a full disk, leaves no truncated partition that a re-run would take as done. Job results
    (:class:`ioi_anti.execution.Results`) are saved as they arrive, so whatever a cluster finishes first
    is on disk first. kedro-datasets raises on an empty folder; the "done so far" view of a resumable
    sweep must read as empty instead.
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        if not self._filesystem.exists(self._normalized_path):
            return {}
        self._remove_unfinished()
        if not self._list_partitions():
            return {}
        return super().load()

    def _remove_unfinished(self) -> None:
        """Delete what a killed run left half-written (one run at a time holds the project's lock)."""
        for path in self._filesystem.find(self._normalized_path):
            if PARTIAL in path.rsplit("/", 1)[-1]:
                logger.warning("Removing %s, left half-written by an interrupted run.", path)
                self._filesystem.rm(path)

    def save(self, data: dict[str, Any]) -> None:
        """Save every partition; results of :mod:`ioi_anti.execution` jobs in the order they arrive."""
        if self._overwrite and self._filesystem.exists(self._normalized_path):
            self._filesystem.rm(self._normalized_path, recursive=True)
        items = data.arrivals() if isinstance(data, Results) else sorted(data.items())
        for partition_id, partition_data in items:
            final = self._partition_to_path(partition_id)
            partial = f"{final}{PARTIAL}{os.getpid()}"
            kwargs = deepcopy(self._dataset_config)
            kwargs[self._filepath_arg] = self._join_protocol(partial)
            value = partition_data() if callable(partition_data) and self._save_lazily else partition_data
            try:
                self._dataset_type(**kwargs).save(value)
                self._filesystem.mv(partial, final)
            finally:
                if self._filesystem.exists(partial):
                    self._filesystem.rm(partial)
            self._invalidate_caches()




class FigureDataset(MatplotlibDataset):
    """kedro-datasets' ``MatplotlibDataset`` that can also be loaded, as a :class:`SavedFigure`.

    The upstream dataset is write-only, but the report embeds every figure (``report.html``) and
    links each one by its versioned path (``report.md``), so it takes the figures as inputs;
    that also draws the figure -> report edges in kedro-viz, whose image preview is inherited.
    """

    def load(self) -> SavedFigure:  # type: ignore[override]
        path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(path, mode="rb") as file:
            return SavedFigure(path=path, png=file.read())
