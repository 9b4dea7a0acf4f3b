"""Files written whole or not at all: a temporary file in the same folder, renamed into place.

Every file the command line, the evaluation and the bundles write goes through here, so a run
killed at any moment leaves the old file or the complete new one, never a truncated file in its
place (``os.replace`` is atomic within a file system; the data is flushed to disk before the
rename). A kill can leave a ``.<name>.*.tmp`` file beside it, which nothing reads.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from os import PathLike
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


def _default_mode() -> int:
    """The permissions an ordinary new file gets (0o666 less the umask), not mkstemp's 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (with any writer: ``torch.save``,
    ``savefig``, …); renamed onto ``path`` when the block ends without an error, removed
    otherwise."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # the data on disk before the name points at it
            os.fsync(written.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(path: str | PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return path
