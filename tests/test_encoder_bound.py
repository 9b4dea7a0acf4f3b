"""The encoder refuses, in one line and at once, a latent its rANS coder cannot represent
(CompressAI's encoder never returns for an escaped value from about 2^27 on); every path that
codes: the slice loop of TCM, the CompressAI hyperprior adapter, and CompressAI's own entropy
models. Each case runs in a subprocess with a time limit, so a hang fails instead of stalling."""

from __future__ import annotations

import subprocess
import sys

import pytest

PRELUDE = """
import torch, hydra
from helpers import tiny_cfg
from lae_vbr.models.rans import UncodableLatentError
torch.manual_seed(0)
"""

CASES = {
    # TCM's slice loop: y of 2^30 after the analysis
    "tcm": """
model = hydra.utils.instantiate(tiny_cfg(lae={"enabled": False})["model"]).eval()
model.update()
y = torch.full((1, 64, 2, 2), 2.0**30)
try:
    model.code_latent(y)
except UncodableLatentError as err:
    print("refused:", err)
""",
    # CompressAI's entropy models (the gain peer and z of every model go through them)
    "entropy_models": """
from lae_vbr.models.rans import CheckedEntropyBottleneck, CheckedGaussianConditional
gaussian = CheckedGaussianConditional(None)
gaussian.update_scale_table(torch.exp(torch.linspace(-2, 3, 16)))
gaussian.update()
x = torch.full((1, 2, 2, 2), 2.0**30)
try:
    gaussian.compress(x, gaussian.build_indexes(torch.ones_like(x)))
except UncodableLatentError as err:
    print("refused:", err)
bottleneck = CheckedEntropyBottleneck(2)
bottleneck.update(force=True)
try:
    bottleneck.compress(x)
except UncodableLatentError as err:
    print("refused:", err)
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_latent_of_two_to_the_thirty_is_refused_not_hung(case: str) -> None:
    code = PRELUDE + CASES[case]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        cwd=__file__.rsplit("/", 1)[0],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    refusals = [line for line in done.stdout.splitlines() if line.startswith("refused:")]
    assert refusals and all("beyond what the entropy coder can represent" in r for r in refusals)
    assert len(refusals) == CASES[case].count("except UncodableLatentError")


def test_values_the_coder_represents_still_code() -> None:
    """Escapes up to the bound still code and decode (the check is not stricter than needed)."""
    import torch

    from lae_vbr.models.rans import CheckedGaussianConditional

    gaussian = CheckedGaussianConditional(None)
    gaussian.update_scale_table(torch.exp(torch.linspace(-2, 3, 16)))
    gaussian.update()
    x = torch.tensor([[[[3.0e6, -3.0e6], [5.0, -7.0]]]])
    indexes = gaussian.build_indexes(torch.ones_like(x))
    strings = gaussian.compress(x, indexes)
    assert torch.equal(gaussian.decompress(strings, indexes), x.round())
