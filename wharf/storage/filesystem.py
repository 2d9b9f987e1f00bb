"""Local filesystem driver (the embedded default)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO

WRITEBACK_WINDOW = 8 << 20
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class _FileWriter:
    def __init__(self, path: Path, offset: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        self._file = os.fdopen(fd, "wb", buffering=0)
        os.ftruncate(fd, offset)
        self._file.seek(offset)
        self._start = self._position = self._flushed = offset

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = self._file.write(view)
                view = view[n:]
        except OSError as e:
            self._give_back(e)
            raise
        self._position += len(data)
        if self._position - self._flushed >= WRITEBACK_WINDOW:
            # Start writing these pages to disk now, without waiting: on Linux, DONTNEED on
            # dirty pages starts their writeback (and keeps them cached). The fsync at commit
            # then has little left to do instead of the whole blob.
            os.posix_fadvise(
                self._file.fileno(),
                self._flushed,
                self._position - self._flushed,
                os.POSIX_FADV_DONTNEED,
            )
            self._flushed = self._position

    def commit(self) -> None:
        try:
            os.fsync(self._file.fileno())  # may be where a full disk shows (delayed allocation)
        except OSError as e:
            self._give_back(e)
            self._file.close()
            raise
        self._file.close()

    def _give_back(self, error: OSError) -> None:
        """On a full disk (or over quota), free what this writer wrote: nobody has counted
        those bytes, and leaving them would keep the disk full for every other request."""
        if error.filename is None:
            error.filename = str(self._path)  # so that the log says which disk is full
        if error.errno in NO_SPACE:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._start)

    def close(self) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()  # the bytes stay; the next writer at this offset truncates them


class FilesystemDriver:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _full(self, path: str) -> Path:
        # Paths come from storage/paths.py; a lexical check is enough (resolve() costs a
        # system call per component on every request).
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"path escapes storage root: {path}")
        return self.root / path

    def stat(self, path: str) -> int | None:
        try:
            return self._full(path).stat().st_size
        except FileNotFoundError:
            return None

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        f = self._full(path).open("rb")
        if offset:
            f.seek(offset)
        return f

    def writer(self, path: str, offset: int = 0) -> _FileWriter:
        return _FileWriter(self._full(path), offset)

    def move(self, src: str, dst: str) -> None:
        target = self._full(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._full(src), target)
        _fsync_dir(target.parent)

    def delete(self, path: str) -> None:
        full = self._full(path)
        if full.is_dir():
            shutil.rmtree(full, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                full.unlink()

    def local_path(self, path: str) -> str | None:
        return str(self._full(path))

    def redirect_url(self, path: str) -> str | None:
        return None

    def describe(self) -> str:
        return f"file://{self.root}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
