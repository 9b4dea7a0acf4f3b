"""Every use of CompressAI's private names, in one place.

The project builds on CompressAI's entropy models, and a few of the things it needs are not
public there: the quantised CDF tables the rANS coder reads, the bottleneck's medians and table
indexes, and the likelihood functions without their own quantisation (latent refinement and
the rate estimate quantise first). A CompressAI release that renames one of these breaks this
module alone; ``pyproject.toml`` pins the range tested (``compressai>=1.2.6,<1.3``) and the
GitHub workflow runs the suite against the newest release too, so such a break shows there.
"""

from __future__ import annotations

from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
from torch import Size, Tensor

__all__ = [
    "ENTROPY_BUFFERS",
    "bottleneck_indexes",
    "bottleneck_medians",
    "cdf_tables",
    "gaussian_likelihood_of",
    "bottleneck_likelihood_of",
]

#: The state-dict names of the buffers ``update()`` derives from the weights (the coder's
#: tables, and GaussianConditional's scale table): their sizes follow the trained weights.
ENTROPY_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def cdf_tables(model: EntropyModel) -> tuple[Tensor, Tensor, Tensor]:
    """``(quantised CDFs, used length of each, value of each row's first symbol)`` of an
    entropy model after ``update()``: what the rANS coder reads."""
    return model._quantized_cdf, model._cdf_length, model._offset


def bottleneck_medians(bottleneck: EntropyBottleneck) -> Tensor:
    """The medians the bottleneck codes its symbols around, shaped (1, C, 1, 1)."""
    return bottleneck._get_medians()


def bottleneck_indexes(bottleneck: EntropyBottleneck, size: Size) -> Tensor:
    """The CDF table index of every element of a hyper-latent of this size."""
    return bottleneck._build_indexes(size)


def gaussian_likelihood_of(
    gaussian: GaussianConditional, values: Tensor, scales: Tensor, means: Tensor
) -> Tensor:
    """Likelihood of already quantised values (no bound, no quantisation of its own)."""
    return gaussian._likelihood(values, scales, means)


def bottleneck_likelihood_of(bottleneck: EntropyBottleneck, values: Tensor) -> Tensor:
    """Likelihood of already quantised values laid out (C, 1, N), as the bottleneck's own
    forward computes it (no bound, no quantisation of its own)."""
    return bottleneck._likelihood(values)[0]
