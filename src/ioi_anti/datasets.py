"""Catalog dataset types the project adds to kedro-datasets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kedro.io.core import get_filepath_str
from kedro_datasets.matplotlib import MatplotlibDataset
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


@dataclass(frozen=True)
class SavedFigure:
    """A figure as saved: where its PNG lies (the loaded version) and the PNG itself."""

    path: str
    png: bytes


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
