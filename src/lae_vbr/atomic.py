"""Files written whole or not at all: a temporary file in the same folder, renamed into place.

Every file the command line, the evaluation and the bundles write goes through here, so a run
killed at any moment leaves the old file or the complete new one, never a truncated file in its
place (``os.replace`` is atomic within a file system; the data is flushed to disk before the
rename). A kill can leave a ``.<name>.*.tmp`` file beside it, which nothing reads.

What the path names is respected: a symbolic link is written through (its target is replaced,
the link stays), a file that is not a regular one (``/dev/null``, a FIFO) is written to
directly, as there is nothing to keep whole, and a file replaced keeps its permissions.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from os import PathLike
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


def _umask() -> int:
    """The process's umask, read without changing it (Linux), else the usual 0o022."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _mode_for(path: Path) -> int:
    """The permissions the written file gets: the replaced file's, else a new file's."""
    with contextlib.suppress(FileNotFoundError):
        return stat.S_IMODE(path.stat().st_mode)
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | PathLike) -> Iterator[Path]:
    """A path to write to (with any writer: ``torch.save``, ``savefig``, …): a temporary file
    beside ``path``, renamed onto it when the block ends without an error and removed
    otherwise; ``path`` itself where it is not a regular file (a device, a FIFO)."""
    path = Path(path).resolve() if Path(path).is_symlink() else Path(path)
    if path.exists() and not path.is_file():
        yield path
        return
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # the data on disk before the name points at it
            os.fsync(written.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(path: str | PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all; returns ``path``."""
    with atomic_path(path) as target, open(target, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
