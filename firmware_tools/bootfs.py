"""Read and write files in a FAT partition inside an image file: no root, no mount.

Uses pyfatfs on the partition's byte range. Paths are relative to the
partition's root, with ``/`` separators.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

from pyfatfs.PyFatFS import PyFatFS

from firmware_tools.mbr import Partition
from schemas.errors import ConfigError

__all__ = ["BootFS"]

logger = logging.getLogger(__name__)


class BootFS:
    """A FAT partition of an image, opened for reading and writing."""

    def __init__(self, image: Path, partition: Partition) -> None:
        try:
            self._fs = PyFatFS(str(image), offset=partition.offset, preserve_case=True)
        except Exception as exc:  # pyfatfs raises its own errors and plain ones for a bad BPB
            raise ConfigError(f"{image}: partition {partition.index} is not a readable FAT "
                              f"file system: {exc}") from exc

    def __enter__(self) -> BootFS:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._fs.close()

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists("/" + path))

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it does not exist."""
        if not self.exists(path):
            return None
        return str(self._fs.readtext("/" + path))

    def write_bytes(self, path: str, data: bytes) -> None:
        parent = "/" + path.rsplit("/", 1)[0] if "/" in path else "/"
        self._fs.makedirs(parent, recreate=True)
        if self._fs.exists("/" + path):
            # pyfatfs 1.1 can corrupt a cluster chain when a file is rewritten in place; replace it.
            self._fs.remove("/" + path)
        self._fs.writebytes("/" + path, data)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode())

    def remove_tree(self, path: str) -> None:
        if self.exists(path):
            self._fs.removetree("/" + path)

    def copy_tree(self, source: Path, dest: str) -> int:
        """Copy a local directory into ``dest`` (replacing it); returns the bytes copied."""
        self.remove_tree(dest)
        total = 0
        for item in sorted(source.rglob("*")):
            if item.is_file():
                data = item.read_bytes()
                self.write_bytes(f"{dest}/{item.relative_to(source).as_posix()}", data)
                total += len(data)
        return total
