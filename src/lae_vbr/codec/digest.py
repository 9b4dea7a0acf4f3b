"""The weights digest: which model wrote a file, independent of how its weights were stored."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lae_vbr.models.compressai_compat import ENTROPY_BUFFERS

from .container import DIGEST_SIZE

__all__ = ["weights_digest"]

#: Entropy-coder tables rebuilt by ``update()``; left out of the digest, so it does not depend
#: on whether a checkpoint was saved before or after them.
_DERIVED_BUFFERS = frozenset(ENTROPY_BUFFERS)


def weights_digest(weights: nn.Module | Mapping[str, Tensor]) -> bytes:
    """The first 8 bytes of SHA-256 over the weights: identifies a model in the container.

    Keys in sorted order; per entry the key, its shape and its values, floating point as
    little-endian float32 and integers as int64, so an fp16 bundle and the float32 model
    loaded from it hash the same. Entropy-coder tables derived by ``update()`` are skipped.
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    sha = hashlib.sha256()
    for key in sorted(state):
        if key.rsplit(".", 1)[-1] in _DERIVED_BUFFERS:
            continue
        t = state[key].detach().cpu()
        floating = t.is_floating_point()
        array = t.to(torch.float32 if floating else torch.int64).contiguous().numpy()
        array = array.astype("<f4" if floating else "<i8", copy=False).reshape(-1)
        sha.update(f"{key}:{tuple(t.shape)}".encode())
        sha.update(memoryview(array).cast("B"))
    return sha.digest()[:DIGEST_SIZE]
