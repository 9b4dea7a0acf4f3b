"""Where the project finds material that lives outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "shared_dir"]

#: Root of a source checkout (meaningful for editable installs, which the README uses).
REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """The read-only data/fixture folder: ``$LAE_VBR_SHARED``, else ``<repo>/../shared``."""
    env = os.environ.get("LAE_VBR_SHARED")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared").resolve()
