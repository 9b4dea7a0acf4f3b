"""Reusing freed memory inside the process, so that large tensors cost no page faults.

PyTorch's CPU allocator keeps no cache: every tensor is a ``malloc`` and every release a
``free``. glibc serves blocks above its mmap threshold (adaptive, at most 32 MiB) with fresh
pages from the kernel and gives them back when they are freed, so every large intermediate of
every layer costs one page fault and one page of zeros per 4 KiB. The maps of a codec's main
transforms are that large: on TCM-VBR N=64 at 768×512 it was 1.7 M faults per megapixel and
a fifth of a compress's CPU time, and a larger share at larger sizes, where more of the maps
are above the threshold (``experiments/bench``, "Freed memory kept").

:func:`keep_freed_memory` makes glibc serve every block from its heap and never shrink it, so
a freed map is reused by the next one. The price is memory: freed blocks are returned to the
system only when the process ends, and blocks of other sizes leave holes in the heap, so the
peak grows (4K UHD on TCM-VBR N=64: 5.7 GB against 4.4 GB). That suits a process that codes
and exits: ``lae-vbr`` keeps freed memory for images up to :data:`KEEP_FREED_MAX_PIXELS`
(above, the peak matters more than the time), the evaluation always. A library never calls it
on its own: a long-lived service would keep its largest image's peak.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "KEEP_FREED_MAX_PIXELS",
    "keep_freed_memory",
    "keep_freed_memory_for",
    "freed_maps_returned",
    "release_freed_memory",
]

#: The largest image (pixels) for which ``lae-vbr`` keeps freed memory: 4K UHD, whose peak
#: then stays within 6 GB.
KEEP_FREED_MAX_PIXELS = 3840 * 2160

#: mallopt(3) parameters (glibc's malloc.h); -1 for M_TRIM_THRESHOLD turns trimming off.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: A module output from this size on is followed by :func:`release_freed_memory` inside
#: :func:`freed_maps_returned`: the maps of a 4K latent's slice networks (17 MB for 64
#: channels at 136×240 in float64) are, their small intermediates not.
RETURN_AFTER_BYTES = 8 << 20

#: Whether :func:`keep_freed_memory` is on in this process (mallopt has no getter).
_keeping = False


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library this process runs on, if it is glibc on Linux (their mallopt and
    malloc_trim are the ones meant here; musl's differ or do nothing); looked up once, as
    :func:`freed_maps_returned` asks for it after every large map."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return libc


def keep_freed_memory() -> bool:
    """Serve all allocations from the heap and never trim it (glibc); False where the C
    library is not glibc (then nothing changes)."""
    global _keeping
    libc = _glibc()
    if libc is None:
        return False
    _keeping = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    return _keeping


def keep_freed_memory_for(pixels: int) -> bool:
    """:func:`keep_freed_memory` for a process whose largest image has ``pixels`` pixels, if
    that is at most :data:`KEEP_FREED_MAX_PIXELS`; whether it is on."""
    return pixels <= KEEP_FREED_MAX_PIXELS and keep_freed_memory()


def release_freed_memory() -> bool:
    """Give the heap's free memory back to the system now (glibc's ``malloc_trim``); whether
    any was. Between the phases of one coding call that use maps of different sizes (the
    analysis transform, then the synthesis transform: ``--psnr``, latent refinement), kept
    freed memory would otherwise add the two phases' peaks: 4K UHD ``--psnr`` on TCM-VBR
    N=64 peaked at 1.35× a plain compress with it kept. Changes no setting."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


@contextmanager
def freed_maps_returned(min_bytes: int = RETURN_AFTER_BYTES) -> Iterator[None]:
    """Inside, freed memory is given back to the system after every module call (PyTorch's
    global forward hook) whose output has ``min_bytes`` or more, where :func:`keep_freed_memory`
    is on; nothing changes where it is off.

    For a pass that follows others with maps of other sizes: their freed blocks, given back
    (:func:`release_freed_memory`) but still the heap's, spread over the address range of
    their peak, and a pass that keeps its own freed maps touches pages all over that range.
    The final coding of a 4K UHD latent refinement (TCM-VBR N=64, one step) grew the resident
    memory from 1.41 to 7.49 GB so, where the same coding from a fresh heap grows it to 5.75
    GB (``experiments/bench/probe_refine_phases.py``, ``probe_coding_memory.py``). The price
    is glibc's own: each large map faults its pages in afresh."""
    if not _keeping:
        yield
        return
    from torch.nn.modules.module import register_module_forward_hook

    def release_after(module: object, args: object, output: object) -> None:
        if getattr(output, "nbytes", 0) >= min_bytes:
            release_freed_memory()

    handle = register_module_forward_hook(release_after)
    try:
        yield
    finally:
        handle.remove()
