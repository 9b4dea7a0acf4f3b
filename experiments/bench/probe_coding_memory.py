"""Where the entropy coding of one large latent takes its memory: the resident memory and the
process's peak after each network call of the latent codec's slice loop (the hyper-syntheses,
then per slice the mean and scale networks and the LRP), while ``model.code_latent`` codes the
latent of a tiled kodim01 (TCM-VBR N=64 as in ``bench_memory.py``, float64 arithmetic, one
thread)::

    OMP_NUM_THREADS=1 python experiments/bench/probe_coding_memory.py 3840x2160 --heap keep
    OMP_NUM_THREADS=1 python experiments/bench/probe_coding_memory.py 3840x2160 --heap system

``keep``: freed memory kept, as ``lae-vbr`` runs a 4K image; ``system``: glibc's own heap,
whose peak is close to the live memory. The analysis runs first and its freed memory is given
back, as latent refinement does before its final coding, so the coding starts from the
resident memory printed first; the peaks printed are the coding's own (Linux's high-water
mark, reset after the analysis).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_memory import DEFAULT_IMAGE, bench_model, parse_size, resident_gb, tiled_image

from lae_vbr.heap import keep_freed_memory, release_freed_memory
from lae_vbr.models import entropy


def _peak_gb() -> float:
    """The peak resident memory since the last :func:`_reset_peak` (Linux's VmHWM)."""
    with open("/proc/self/status") as status:
        line = next(row for row in status if row.startswith("VmHWM:"))
    return int(line.split()[1]) / 2**20


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak resident memory starts again from the current one


def _print_after(name: str, began: float) -> None:
    seconds = time.perf_counter() - began
    print(f"{seconds:6.1f} s  {name:<54} now {resident_gb():.2f} GB, peak {_peak_gb():.2f} GB")


def _reporting_calls(model: torch.nn.Module) -> None:
    """Print the memory after every ``entropy.run_networks`` call, named by its networks, and
    after each of the hyper transforms."""
    run_networks = entropy.run_networks
    names = {id(module): name for name, module in model.named_modules()}
    began, calls = time.perf_counter(), [0]

    def reported(inputs, *networks, **options):
        out = run_networks(inputs, *networks, **options)
        calls[0] += 1
        called = "+".join(names.get(id(n), type(n).__name__) for n in networks)
        _print_after(f"call {calls[0]:2d} {called}", began)
        return out

    entropy.run_networks = reported
    for name, child in model.named_children():  # the hyper transforms, called directly
        if not isinstance(child, torch.nn.ModuleList):
            child.register_forward_hook(lambda *_, name=name: _print_after(name, began))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size", nargs="?", default="3840x2160", help="WIDTHxHEIGHT")
    parser.add_argument("--heap", choices=["keep", "system"], default="keep")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.heap == "keep" and not keep_freed_memory():
        raise SystemExit("--heap keep needs glibc")
    model = bench_model(untiled=False, layout="nchw")
    x = tiled_image(DEFAULT_IMAGE, *parse_size(args.size))
    with torch.no_grad():
        analysis = model.analyse(x)
        y, coder = analysis.latent(3.0), analysis.coder("float64")
    del x, analysis
    release_freed_memory()
    _reset_peak()
    print(f"latent {tuple(y.shape)}: now {resident_gb():.2f} GB, peak {_peak_gb():.2f} GB")
    _reporting_calls(coder)
    with torch.no_grad():
        out = model.code_latent(y, arithmetic="float64", converted=coder)
    size = sum(len(s[0]) for s in out["strings"])
    print(f"coded {size} bytes: now {resident_gb():.2f} GB, peak {_peak_gb():.2f} GB")


if __name__ == "__main__":
    main()
