"""Shared test fixtures.

Tests that need ``../shared`` (the Kodak images, photos, reference fixtures, anchors) get it
through the ``shared`` fixture. Locally they are skipped, with the reason shown, when it is
absent; under ``CI=true`` they fail instead, so a CI run never passes without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lae_vbr.paths import shared_dir

# One intra-op thread: tests are small, and on a shared machine extra OpenMP threads spin
# against other processes and slow everything down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_dir()
    if not (root / "data").is_dir():
        message = f"shared data folder not found at {root} (set LAE_VBR_SHARED)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root
