"""Latent refinement: the fast default schedule against the reference's, time and loss reduction.

    OMP_NUM_THREADS=1 python experiments/dlm/compare_schedules.py --images kodim04,kodim08 \
        --lmbda-idx 1,4 --baseline-rev 7adf4d3 --out experiments/dlm/schedules.json

For every image and λ index, in one process and on one thread, the refined encodes are run
back to back, their order rotating from point to point (so a change in the machine's load hits
each alike): ``fast`` (:class:`RefineSchedule`'s defaults: bfloat16 decoder path where the CPU
has it natively), ``fast-float32`` (the same in float32), ``reference``
(:meth:`RefineSchedule.reference`, the same loop) and, with ``--baseline-rev``, ``today``: the
reference schedule run by ``src/lae_vbr/codec/refine.py`` as it was at that revision (loaded
from git into this process, so it drives the same model). Per encode: the CPU time and the wall
time of ``refine_encode`` (analysis, refinement, entropy coding; on one thread the CPU time is
the work done, which other processes on a shared machine do not inflate as they do the wall
time); the reduction of the image's loss
``bpp + 255²·λ·MSE`` as the refinement measured it (best step against the unrefined latent,
the study's "loss reduction"), the same in float32 (``exact_``, evaluated afterwards, not
timed), and the reduction of that loss for the real file (its y+z bytes, the decoded image)
against the plain encode's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.codec.refine import (
    RefineSchedule,
    native_bfloat16,
    refine_encode,
    refinement_loss,
)
from lae_vbr.models.rate import value_of_index

ROOT = Path(__file__).resolve().parents[2]


def _baseline_refine(rev: str) -> ModuleType:
    """``lae_vbr/codec/refine.py`` of git revision ``rev``, as a module of this package."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/lae_vbr/codec/refine.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("lae_vbr.codec._refine_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "lae_vbr.codec"  # its relative imports: this tree's modules
    sys.modules[spec.name] = module
    exec(compile(source, f"{rev}:refine.py", "exec"), vars(module))
    return module


def _real_loss(codec: ImageCodec, stream, x: torch.Tensor, lmbda: float) -> float:
    """bpp of the y+z bytes + 255²·λ·MSE of what the normal decoder reconstructs."""
    x_hat = codec.decode(stream)
    bits = 8 * (len(stream.y_string) + len(stream.z_string))
    return bits / (x.shape[-2] * x.shape[-1]) + 255**2 * lmbda * float((x_hat - x).pow(2).mean())


#: The schedules of this tree that are compared, by name.
SCHEDULES = {
    "fast": RefineSchedule(),
    "fast-float32": RefineSchedule(precision="float32"),
    "reference": RefineSchedule.reference(),
}


def parse_schedule(text: str) -> tuple[str, RefineSchedule]:
    """``NAME:key=value,...`` (RefineSchedule's fields; unnamed ones keep the defaults)."""
    name, _, fields = text.partition(":")
    kwargs = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        if key == "precision":
            kwargs[key] = value
        elif key == "midpoint_on_rise":
            kwargs[key] = value.lower() in ("1", "true", "yes")
        else:
            kwargs[key] = float(value)
    if "steps" in kwargs:
        kwargs["steps"] = int(kwargs["steps"])
    return name, RefineSchedule(**kwargs)


def _variants(baseline: ModuleType | None, schedules: dict[str, RefineSchedule]) -> dict:
    """name → a function (codec, x, idx) → (stream, RefineResult) of one refined encode."""
    variants = {
        name: (lambda codec, x, idx, s=schedule: refine_encode(codec, x, idx, s))
        for name, schedule in schedules.items()
    }
    if baseline is not None:
        variants["today"] = lambda codec, x, idx: baseline.refine_encode(
            codec, x, idx, baseline.RefineSchedule()
        )
    return variants


def _exact_reduction(codec: ImageCodec, x, lmbda: float, idx: float, result) -> float:
    """1 − loss(best latents) / loss(unrefined latents), both evaluated in float32."""
    y, z, loss_at = refinement_loss(codec.model, x, lmbda, idx)
    with torch.no_grad():
        return 1 - float(loss_at(result.y, result.z)) / float(loss_at(y, z))


def _measure(codec, name: str, x, idx: float, variants: dict, turn: int) -> list[dict]:
    """One row per variant for one image and λ index, variants in a rotated order."""
    lmbda = value_of_index(codec.lmbdas, idx)
    plain = _real_loss(codec, codec.encode(x, idx), x, lmbda)
    order = list(variants)
    order = order[turn % len(order) :] + order[: turn % len(order)]
    rows = []
    for variant in order:
        start, cpu = time.perf_counter(), time.process_time()
        stream, result = variants[variant](codec, x, idx)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        losses = result.losses
        rows.append(
            {
                "image": name,
                "lmbda_idx": idx,
                "variant": variant,
                "seconds": round(seconds, 3),
                "cpu_seconds": round(cpu_seconds, 3),
                "steps_run": len(losses) - 1,
                "loss_reduction": 1 - min(losses) / losses[0],
                "exact_loss_reduction": _exact_reduction(codec, x, lmbda, idx, result),
                "real_loss_reduction": 1 - _real_loss(codec, stream, x, lmbda) / plain,
                "losses": [round(v, 6) for v in losses],
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "losses"}), flush=True)
    return rows


def _ratios(by_point: dict, variant: str, base: str, key: str) -> dict:
    """Median and range over the points of ``variant``'s time / ``base``'s time."""
    values = [p[variant][key] / p[base][key] for p in by_point.values()]
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}  # fmt: skip


def _summary(rows: list[dict]) -> dict:
    """Per variant: mean reductions, median and total times, time ratios per point."""
    out: dict = {}
    by_point: dict = {}
    for r in rows:
        by_point.setdefault((r["image"], r["lmbda_idx"]), {})[r["variant"]] = r
    bases = [b for b in ("reference", "today") if all(b in p for p in by_point.values())]
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        out[variant] = {
            **{
                f"mean_{k}": round(statistics.mean(r[k] for r in mine), 5)
                for k in ("loss_reduction", "exact_loss_reduction", "real_loss_reduction")
            },
            **{f"total_{k}": round(sum(r[k] for r in mine), 1) for k in ("seconds", "cpu_seconds")},
            **{
                f"{k}_vs_{base}": _ratios(by_point, variant, base, k)
                for base in bases
                for k in ("cpu_seconds", "seconds")
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kodak", type=Path, default=ROOT.parent / "shared" / "data" / "kodak")
    parser.add_argument("--images", default="kodim04,kodim08,kodim13,kodim15,kodim19,kodim23")
    parser.add_argument("--lmbda-idx", default="1,4")
    parser.add_argument("--checkpoint", type=Path, help="default: the bundled demo model")
    parser.add_argument("--baseline-rev", help="also time the refine.py of this git revision")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--schedule",
        action="append",
        default=[],
        type=parse_schedule,
        help="another schedule, NAME:key=value,... (e.g. wide:lr=2000,decay=0.95); repeatable",
    )
    parser.add_argument("--only", help="comma-separated names: time these of the schedules alone")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = ImageCodec.load(args.checkpoint)
    baseline = _baseline_refine(args.baseline_rev) if args.baseline_rev else None
    schedules = {**SCHEDULES, **dict(args.schedule)}
    if args.only:
        schedules = {k: v for k, v in schedules.items() if k in args.only.split(",")}
    variants = _variants(baseline, schedules)
    rows, turn = [], 0
    for name in args.images.split(","):
        x = read_image(args.kodak / f"{name}.png")
        for idx in (float(v) for v in args.lmbda_idx.split(",")):
            rows += _measure(codec, name, x, idx, variants, turn)
            turn += 1
    summary = _summary(rows)
    print(json.dumps(summary, indent=2))
    record = {
        "model": str(codec.id),
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "bfloat16_native": native_bfloat16(torch.device("cpu")),
        "schedules": {
            **{name: repr(schedule) for name, schedule in schedules.items()},
            **({"today": f"refine.py at {args.baseline_rev}"} if baseline else {}),
        },
        "summary": summary,
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
