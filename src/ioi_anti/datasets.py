"""Catalog dataset types the project adds to kedro-datasets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro_datasets.partitions import PartitionedDataset


class ResumablePartitionedDataset(PartitionedDataset):
    """A ``PartitionedDataset`` that loads as ``{}`` while nothing has been saved.

    kedro-datasets raises on an empty folder; the "done so far" view of a resumable sweep
    must instead read as empty on a fresh run, so that the sweep starts from scratch.
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        if not self._filesystem.exists(self._normalized_path) or not self._list_partitions():
            return {}
        return super().load()
