"""keep_freed_memory: the maps of later passes through the same layers cost no page faults."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest
import torch

from lae_vbr import heap
from lae_vbr.heap import freed_maps_returned, keep_freed_memory

# Three 3×3 convolutions on a 64 MiB map, four times; prints the page faults of passes 2 to 4.
_PROBE = """
import json, resource, sys, torch
from lae_vbr import heap
from lae_vbr.heap import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.set_num_threads(1)
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
x = torch.rand(1, 16, 1024, 1024)
def layers():
    with torch.inference_mode():
        h = x
        for _ in range(3):
            h = torch.relu(conv(h))
layers()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
per_pass = []
for _ in range(3):
    before = faults()
    layers()
    per_pass.append(faults() - before)
print(json.dumps({"kept": kept, "faults": per_pass}))
"""

MAP_PAGES = 64 * 2**20 // 4096


def _later_passes(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt only")
def test_freed_maps_are_reused_without_page_faults() -> None:
    kept = _later_passes("keep")
    assert kept["kept"] is True
    # Once the heap has grown to the passes' peak, a pass reuses it. One pass may still grow
    # it by a map (seen once on another machine: 16 384 faults in the second pass), so the
    # test asks for one pass in three without faults, which glibc's default never gives.
    assert min(kept["faults"]) < MAP_PAGES // 16, kept["faults"]
    # glibc's default returns each map to the system and faults the next one in page by page
    system = _later_passes("system")["faults"]
    assert min(system) > MAP_PAGES, system


# Freed memory kept: the page faults of passes 2 to 4 of _PROBE's layers inside
# freed_maps_returned, then after it.
_RETURNED_PROBE = """
import json, resource, torch
from lae_vbr.heap import freed_maps_returned, keep_freed_memory
assert keep_freed_memory()
torch.set_num_threads(1)
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
x = torch.rand(1, 16, 1024, 1024)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def passes():
    per_pass = []
    for _ in range(4):
        before = faults()
        with torch.inference_mode():
            h = x
            for _ in range(3):
                h = conv(h)
        per_pass.append(faults() - before)
    return per_pass[1:]
with freed_maps_returned():
    returned = passes()
print(json.dumps({"returned": returned, "after": passes()}))
"""


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt only")
def test_inside_freed_maps_returned_every_large_map_goes_back_to_the_system() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _RETURNED_PROBE], capture_output=True, text=True, check=True
    )
    faults = json.loads(done.stdout.strip().splitlines()[-1])
    # inside, each pass's maps are faulted in afresh (given back after each convolution);
    # after, the first pass grows the heap once and the later ones reuse it
    assert min(faults["returned"]) > MAP_PAGES, faults
    assert min(faults["after"]) < MAP_PAGES // 16, faults


def test_freed_maps_returned_changes_nothing_where_memory_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap, "_keeping", False)
    monkeypatch.setattr(heap, "release_freed_memory", lambda: pytest.fail("trimmed"))
    conv = torch.nn.Conv2d(1, 1, 1)
    with freed_maps_returned(min_bytes=0):
        conv(torch.zeros(1, 1, 4, 4))


@pytest.mark.skipif(_glibc(), reason="elsewhere than glibc")
def test_elsewhere_nothing_changes() -> None:
    assert keep_freed_memory() is False


def test_the_command_keeps_freed_memory_up_to_4k_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    assert heap.keep_freed_memory_for(3840 * 2160) is True
    assert heap.keep_freed_memory_for(6000 * 4000) is False
    assert calls == [1]
