"""TCM-VBR against the reference implementation, interleaved: forward, compress + decompress
and a training step, in one process, from the same initial weights (the timed training steps
train a second copy of each implementation, so forward and coding keep those weights).

    python experiments/bench/bench_vs_reference.py --reference /tmp/VBR_work \
        --image ../shared/data/kodak/kodim01.png --threads 2 --rounds 5 \
        --out experiments/bench/vs_reference_cpu.json

Each round times every phase of both implementations, one after the other, the order of the
two alternating from round to round, so a change in the machine's load hits both alike; the
record gives each phase's median time per implementation and the median, min and max over the
rounds of the per-round ratio reference / ours (above 1: ours is faster).

Phases: ``forward`` (eval, λ index 3, no autograd), ``coding`` (compress then decompress, each
implementation with its own default arithmetic: float64 entropy parameters for ours, float32
for the reference; ``--arithmetic float32`` codes ours in float32 too), and ``train_step`` (a
batch of ``--batch`` random ``--crop``² crops of the image: forward in training mode at a λ
index per sample, the RD loss, backward, the main optimiser step, the auxiliary loss, its
backward and step; the same loss function, optimisers and crops for both). ``--layout nhwc`` runs
our transforms channels-last in ``forward`` and ``coding`` (``transforms_to_channels_last``);
its training step is NCHW, or with ``--train-layout nhwc`` the whole model channels-last, as
training with ``channels_last=true``. The reference runs as it is written (NCHW).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lae_vbr.codec.images import read_image
from lae_vbr.models import TCMVBR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference_equivalence"))

LMBDAS = (0.0025, 0.0035, 0.0067, 0.013, 0.025, 0.05)


def rd_loss(out: dict, x: torch.Tensor, lmbda_idx: torch.Tensor) -> torch.Tensor:
    """bpp + 255²·λ·MSE per sample, averaged: the reference's training loss."""
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(v.log().sum() for v in out["likelihoods"].values()) / (-math.log(2) * num_pixels)
    lmbdas = torch.tensor(LMBDAS)[lmbda_idx.long()]
    mse = (out["x_hat"] - x).pow(2).mean(dim=(1, 2, 3))
    return 255**2 * (lmbdas * mse).mean() + bpp


def optimisers(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return torch.optim.Adam(main, lr=1e-4), torch.optim.Adam(aux, lr=1e-3)


class Runner:
    """The phases of one implementation, each a call that does the whole phase once.

    ``train_model`` (default: ``model``) is the copy that ``train_step`` trains: with one
    each, the forward and coding phases of both implementations keep the initial weights
    (and code the same bytes) however many steps are timed."""

    def __init__(
        self, model, forward_train, x, crops, lmbda_idx: float, train_model=None, **coding
    ) -> None:
        self.model, self.x, self.crops, self.idx = model, x, crops, lmbda_idx
        self.train_model = model if train_model is None else train_model
        self.coding_options = coding  # e.g. arithmetic=..., for ours
        self.forward_train = forward_train
        self.opt, self.aux_opt = optimisers(self.train_model)
        self.sample_idx = torch.arange(len(crops)) % len(LMBDAS)

    def forward(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.model(self.x, self.idx)

    def coding(self) -> int:
        self.model.eval()
        with torch.inference_mode():
            enc = self.model.compress(self.x, self.idx, **self.coding_options)
            self.model.decompress(enc["strings"], enc["shape"], self.idx, **self.coding_options)
        return sum(len(s[0]) for s in enc["strings"])

    def train_step(self) -> None:
        self.train_model.train()
        self.opt.zero_grad()
        self.aux_opt.zero_grad()
        out = self.forward_train(self.crops, self.sample_idx)
        rd_loss(out, self.crops, self.sample_idx).backward()
        self.opt.step()
        self.train_model.aux_loss().backward()
        self.aux_opt.step()


def _ours(args, weights: dict) -> TCMVBR:
    model = TCMVBR(N=args.N)
    model.load_state_dict(weights)
    model.update(force=True)
    return model


def build(args, reference_module, weights: dict, x, crops) -> dict[str, Runner]:
    ours = _ours(args, weights)
    if args.layout == "nhwc":
        ours.transforms_to_channels_last()
    ours_train = _ours(args, weights)
    layout = torch.contiguous_format
    if args.train_layout == "nhwc":  # as CompressionModule runs it with channels_last=true
        layout = torch.channels_last
        ours_train.to(memory_format=layout)
    ref, ref_train = (_reference(reference_module, args, weights) for _ in range(2))
    return {
        "lae-vbr": Runner(
            ours,
            lambda b, i: ours_train(b.contiguous(memory_format=layout), i.float()),
            x,
            crops,
            args.lmbda_index,
            train_model=ours_train,
            arithmetic=args.arithmetic,
        ),
        "reference": Runner(
            ref,
            lambda b, i: _ref_forward(ref_train, b, i),
            x,
            crops,
            args.lmbda_index,
            train_model=ref_train,
        ),
    }


def _reference(reference_module, args, weights: dict):
    model = reference_module.TCM_VBR(
        config=[2, 2, 2, 2, 2, 2], head_dim=[8, 16, 32, 32, 16, 8], N=args.N, M=320
    )
    model.load_state_dict(weights)
    model.update(force=True)
    return model


def _ref_forward(ref, batch: torch.Tensor, idx: torch.Tensor) -> dict:
    """The reference's training forward with the λ indices given (it draws them with
    ``np.random`` otherwise): its ``lmd_test`` takes one index, so each sample's index is
    passed by temporarily replacing the draw."""
    drawn = np.random.randint
    np.random.randint = lambda *a, **k: idx.numpy().astype(np.int64)
    try:
        return ref(batch)
    finally:
        np.random.randint = drawn


def timed(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def summarise(runs: dict, phases: list[str]) -> dict:
    out = {}
    for phase in phases:
        ours, ref = runs["lae-vbr"][phase], runs["reference"][phase]
        ratios = [r / o for r, o in zip(ref, ours, strict=True)]
        out[phase] = {
            "lae-vbr_median_s": round(statistics.median(ours), 3),
            "reference_median_s": round(statistics.median(ref), 3),
            "speedup_median": round(statistics.median(ratios), 3),
            "speedup_min": round(min(ratios), 3),
            "speedup_max": round(max(ratios), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a VBR_work checkout")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--lmbda-index", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--phases", default="forward,coding,train_step")
    parser.add_argument(
        "--arithmetic", default="float64", choices=["float64", "float32"], help="ours, coding"
    )
    parser.add_argument(
        "--layout",
        default="nchw",
        choices=["nchw", "nhwc"],
        help="ours, forward and coding: transforms NCHW (as ImageCodec) or channels-last",
    )
    parser.add_argument(
        "--train-layout",
        default="nchw",
        choices=["nchw", "nhwc"],
        help="ours, training step: the default, or channels_last=true (the whole model NHWC)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = read_image(args.image)
    gen = torch.Generator().manual_seed(0)
    tops = torch.randint(0, x.shape[2] - args.crop + 1, (args.batch,), generator=gen)
    lefts = torch.randint(0, x.shape[3] - args.crop + 1, (args.batch,), generator=gen)
    crops = torch.cat([
        x[:, :, t : t + args.crop, s : s + args.crop] for t, s in zip(tops, lefts, strict=True)
    ])  # fmt: skip
    from compare import import_reference

    weights = {k: v.clone() for k, v in TCMVBR(N=args.N).state_dict().items()}
    runners = build(args, import_reference(args.reference), weights, x, crops)
    phases = args.phases.split(",")
    names = list(runners)
    for name in names:  # warm-up, and both code the same bytes
        for phase in phases:
            getattr(runners[name], phase)()
    sizes = {name: runners[name].coding() for name in names}
    runs = {name: {p: [] for p in phases} for name in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for phase in phases:
            for name in order:
                runs[name][phase].append(timed(getattr(runners[name], phase)))
        print(f"round {r + 1}: " + ", ".join(
            f"{p} {runs['lae-vbr'][p][-1]:.2f}/{runs['reference'][p][-1]:.2f} s" for p in phases
        ), flush=True)  # fmt: skip
    summary = summarise(runs, phases)
    print(json.dumps(summary, indent=2))
    record = {
        "image": args.image.name,
        "model": f"TCMVBR N={args.N} (untrained, seed 0), identical initial weights",
        "threads": args.threads,
        "arithmetic": {"lae-vbr": args.arithmetic, "reference": "float32"},
        "layout": {"lae-vbr": args.layout, "lae-vbr training": args.train_layout},
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "train_batch": [args.batch, 3, args.crop, args.crop],
        "y_bytes": sizes,
        "summary": summary,
        "runs": runs,
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
