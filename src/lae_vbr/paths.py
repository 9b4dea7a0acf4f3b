"""Where the project finds material that lives outside the repository, and how paths are
written into files that leave the machine (results, records)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path, PurePosixPath

__all__ = ["REPO_ROOT", "SHARED_TOKEN", "portable_path", "portable_paths", "shared_dir"]

#: Root of a source checkout (meaningful for editable installs, which the README uses).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: How paths inside the shared folder are written: the variable that locates it.
SHARED_TOKEN = "$LAE_VBR_SHARED"


def shared_dir() -> Path:
    """The read-only data/fixture folder: ``$LAE_VBR_SHARED``, else ``<repo>/../shared``."""
    env = os.environ.get("LAE_VBR_SHARED")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared").resolve()


def _under(path: Path, root: Path) -> PurePosixPath | None:
    try:
        return PurePosixPath(path.relative_to(root).as_posix())
    except ValueError:
        return None


def _locate(path: str | PathLike) -> tuple[tuple[str, ...], bool]:
    """The path's parts after the repository or ``$LAE_VBR_SHARED`` (which then leads) and
    True, or all its parts (the root dropped) and False when it is elsewhere."""
    resolved = Path(path).expanduser().resolve()
    if (inside := _under(resolved, REPO_ROOT)) is not None:
        return inside.parts or (".",), True
    if (inside := _under(resolved, shared_dir())) is not None:
        return (SHARED_TOKEN, *inside.parts), True
    return resolved.parts[1:] or (resolved.anchor,), False


def portable_path(path: str | PathLike) -> str:
    """``path`` as it may be written into a results file that other machines read: relative
    to the repository, under ``$LAE_VBR_SHARED``, else the file name alone. Absolute paths
    name the machine and user that produced a file, and mean nothing anywhere else."""
    return portable_paths([path])[0]


def portable_paths(paths: Sequence[str | PathLike]) -> list[str]:
    """:func:`portable_path` of each path; those outside the repository and the shared folder
    keep as many trailing parts as it takes to tell them apart (``0/checkpoints/last.ckpt``
    and ``1/checkpoints/last.ckpt`` rather than ``last.ckpt`` twice)."""
    located = [_locate(p) for p in paths]
    names = [PurePosixPath(*parts).as_posix() for parts, _ in located]
    outside, keep = [i for i, (_, inside) in enumerate(located) if not inside], 1
    while outside:
        for i in outside:
            names[i] = PurePosixPath(*located[i][0][-keep:]).as_posix()
        outside = [i for i in outside if names.count(names[i]) > 1 and keep < len(located[i][0])]
        keep += 1
    return names
