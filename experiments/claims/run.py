"""The claims study, end to end: the common start, every arm at an equal budget, the evaluation.

    python experiments/claims/run.py ROOT [--steps N] [--jobs 2] [--only train|eval]
    python experiments/claims/run.py ROOT --toy --results DIR     # CI: a few steps per arm

Training is the framework's own: ``src/train.py`` with ``experiment=claims/start`` (one
fixed-rate model at the largest λ), then Hydra multiruns of ``experiment=claims/fixed`` (one
model per λ) and ``experiment=claims/vbr`` (``model/rate=lae,lae_no_context,lae_encoder_only,
gain``), each started from the common start with ``init_from`` and trained for the same ``N``
steps, plus the LAE model and one fixed-rate model again with a second seed. Every run has a
fixed folder named after its choices (``ROOT/arms/<sweep>/<run_name>``) and ``auto_resume``, so
rerunning this command continues each run from its last checkpoint; a finished run ends at once.
``--jobs 2`` runs two of the multiruns side by side (one thread each).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "src" / "train.py")]

#: The paper's six MSE λs (conf/lmbda/paper_mse.yaml); the common start is at the largest.
LMBDAS = (0.0025, 0.0035, 0.0067, 0.013, 0.025, 0.05)
VBR_ARMS = ("lae", "lae_no_context", "lae_encoder_only", "gain")
#: The second seed's runs: the LAE model and the fixed-rate model at the middle of the set.
SECOND_SEED = 43
SECOND_SEED_LMBDA = 0.013


@dataclass(frozen=True)
class Budget:
    """Optimiser steps of the common start and of every arm, and what follows from them."""

    start_steps: int = 6000
    steps: int = 5000
    #: LR × 0.2 after this share of the steps: the same for every arm; the common start
    #: as the bundled model's first stage (5000 of 6000).
    decay_at: float = 0.8
    start_decay_at: float = 5 / 6
    extra: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if min(self.start_steps, self.steps) < 4:
            raise SystemExit("claims: give at least 4 steps (checkpoints at N/2 and N)")

    def overrides(self, steps: int, decay_at: float) -> list[str]:
        half = steps // 2
        # last.ckpt for resuming; a period of its own (Lightning refuses two alike checkpoints)
        last = 250 if half > 250 else half // 2
        return [
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={half}",
            f"callbacks.budget_checkpoint.every_n_train_steps={half}",
            f"callbacks.last_checkpoint.every_n_train_steps={last}",
            f"optim.scheduler.milestones=[{max(1, round(decay_at * steps))}]",
            *self.extra,
        ]


def start_checkpoint(root: Path) -> Path:
    return root / "start" / "checkpoints" / "last.ckpt"


def start_command(root: Path, budget: Budget) -> list[str]:
    return [
        *TRAIN,
        "experiment=claims/start",
        f"hydra.run.dir={root / 'start'}",
        *budget.overrides(budget.start_steps, budget.start_decay_at),
    ]


def arm_commands(root: Path, budget: Budget) -> list[tuple[str, list[str]]]:
    """(sweep name, command): one Hydra multirun per sweep, each from the common start, the
    longest first."""
    common = [
        f"init_from={start_checkpoint(root)}",
        *budget.overrides(budget.steps, budget.decay_at),
    ]

    def sweep(name: str, *choices: str) -> tuple[str, list[str]]:
        folder = root / "arms" / name
        return name, [*TRAIN, "-m", *choices, f"hydra.sweep.dir={folder}", *common]

    values = ",".join(str(v) for v in LMBDAS)
    return [
        sweep("fixed", "experiment=claims/fixed", f"lmbda.value={values}"),
        sweep("vbr", "experiment=claims/vbr", f"model/rate={','.join(VBR_ARMS)}"),
        sweep(
            "seed2_fixed",
            "experiment=claims/fixed",
            f"lmbda.value={SECOND_SEED_LMBDA}",
            f"seed={SECOND_SEED}",
        ),
        sweep("seed2_vbr", "experiment=claims/vbr", "model/rate=lae", f"seed={SECOND_SEED}"),
    ]


def run_logged(command: Sequence[str], log: Path) -> float:
    """Run one command with its output in ``log``; its wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        sys.exit(f"claims: a run failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - began


def train(root: Path, budget: Budget, jobs: int) -> None:
    print(f"claims: common start -> {root / 'start'}", flush=True)
    seconds = run_logged(start_command(root, budget), root / "logs" / "start.log")
    print(f"claims: common start done in {seconds:.0f} s", flush=True)
    sweeps = arm_commands(root, budget)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        times = pool.map(lambda s: run_logged(s[1], root / "logs" / f"{s[0]}.log"), sweeps)
        for (name, _), seconds in zip(sweeps, times, strict=True):
            print(f"claims: sweep {name} done in {seconds:.0f} s", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder of the runs (kept between reruns)")
    parser.add_argument("--steps", type=int, default=5000, help="N, steps per arm (default 5000)")
    parser.add_argument("--start-steps", type=int, default=6000, help="steps of the common start")
    parser.add_argument("--jobs", type=int, default=1, help="multiruns side by side")
    parser.add_argument(
        "--toy", action="store_true", help="a few steps per arm on two images (checks the pipeline)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    extra: tuple[str, ...] = ()
    if args.toy:
        args.steps, args.start_steps = 4, 4
        extra = ("data.max_val_images=2", "logger=csv")
    budget = Budget(args.start_steps, args.steps, extra=extra)
    train(args.root.resolve(), budget, args.jobs)


if __name__ == "__main__":
    main()
