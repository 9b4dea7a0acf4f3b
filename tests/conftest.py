"""Shared test fixtures.

Tests that need ``../shared`` (or ``$LAE_VBR_SHARED``) get it through the ``shared`` fixture
(Kodak and the published anchors) or ``helpers.require_shared`` (named parts). What
``scripts/get_test_data.py`` downloads (Kodak, the published anchors) is public: locally a test
is skipped, with the reason shown, when it is absent; under ``CI=true`` it fails instead, so a
CI run never passes without it. The maintainers' extra material (the training photos, the
reference-implementation fixtures) is not public: under ``CI=true`` it is required too,
unless the run declares ``LAE_VBR_PUBLIC_DATA_ONLY=1`` (a fork's GitHub workflow without
the archive); only then are its tests skipped, with the reason shown.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import PUBLIC_PARTS, require_shared

# One intra-op thread: tests are small, and on a shared machine extra OpenMP threads spin
# against other processes and slow everything down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared() -> Path:
    return require_shared(*PUBLIC_PARTS)
