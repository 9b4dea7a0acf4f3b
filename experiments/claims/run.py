"""The claims study, end to end: the common start, every arm at an equal budget, the evaluation.

    python experiments/claims/run.py ROOT [--steps N] [--jobs 2] [--only train|eval]
    python experiments/claims/run.py ROOT --toy --results DIR --data DIR   # the pipeline, small

Training is the framework's own: ``src/train.py`` with ``experiment=claims/start`` (one
fixed-rate model at the largest λ), then Hydra multiruns of ``experiment=claims/fixed`` (one
model per λ) and ``experiment=claims/vbr`` (``model/rate=lae,lae_no_context,lae_encoder_only,
gain``), each started from the common start with ``init_from`` and trained for the same ``N``
steps, plus the LAE model and one fixed-rate model again with a second seed. Every run has a
fixed folder named after its choices (``ROOT/arms/<sweep>/<run_name>``) and ``auto_resume``, so
rerunning this command continues each run from its last checkpoint; a finished run ends at once.
``--jobs 2`` runs two of the multiruns side by side (one thread each).

Evaluation is ``src/eval.py study=claims`` (``lae_vbr.studies.claims``) at N and at N/2, on
Kodak and on ``photos/val``: ``RESULTS/results/`` and ``RESULTS/results_photos_val/`` (N/2 in
their ``half/``), RESULTS being ``experiments/claims`` unless ``--results`` names another
folder. An evaluation whose ``bd_rate.json`` exists is kept (``--reevaluate`` redoes it).
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

from lae_vbr.rate_axis import PAPER_MSE_LMBDAS

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TRAIN = [sys.executable, str(ROOT / "src" / "train.py")]
EVAL = [sys.executable, str(ROOT / "src" / "eval.py")]

#: The paper's six MSE λs (conf/lmbda/paper_mse.yaml); the common start is at the largest.
LMBDAS = PAPER_MSE_LMBDAS
VBR_ARMS = ("lae", "lae_no_context", "lae_encoder_only", "gain")
#: The second seed's runs: the LAE model and the fixed-rate model at the middle of the set.
SECOND_SEED = 43
SECOND_SEED_LMBDA = 0.013
#: Test sets: results folder → folder under ../shared/data.
TEST_SETS = {"results": "kodak", "results_photos_val": "photos/val"}


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


def eval_commands(
    root: Path, results: Path, tests: dict[str, Path], steps: int, extra: Sequence[str]
) -> list[tuple[Path, list[str]]]:
    """(results folder, command) of every evaluation: each test set at N and at N/2."""
    commands = []
    for folder, test_dir in tests.items():
        for step, out in ((steps, results / folder), (steps // 2, results / folder / "half")):
            commands.append((out, [
                *EVAL, "study=claims", f"study.root={root}", f"study.step={step}",
                f"study.out={out}", f"test_dir={test_dir}", "num_threads=1", "progress=false",
                f"hydra.run.dir={root / 'eval' / folder / str(step)}", *extra,
            ]))  # fmt: skip
    return commands


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
    seconds = run_logged(start_command(root, budget), root / "logs" / "start.log")
    print(f"claims: common start done ({seconds:.0f} s this time)", flush=True)
    sweeps = arm_commands(root, budget)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        times = pool.map(lambda s: run_logged(s[1], root / "logs" / f"{s[0]}.log"), sweeps)
        for (name, _), seconds in zip(sweeps, times, strict=True):
            print(f"claims: sweep {name} done ({seconds:.0f} s this time)", flush=True)


def evaluate(commands: list[tuple[Path, list[str]]], root: Path, jobs: int, again: bool) -> None:
    todo = [(out, c) for out, c in commands if again or not (out / "bd_rate.json").exists()]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        logs = [root / "logs" / f"eval_{i}.log" for i in range(len(todo))]
        times = pool.map(lambda pair: run_logged(pair[0][1], pair[1]), zip(todo, logs, strict=True))
        for (out, _), seconds in zip(todo, times, strict=True):
            print(f"claims: evaluated into {out} in {seconds:.0f} s", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder of the runs (kept between reruns)")
    parser.add_argument("--steps", type=int, default=5000, help="N, steps per arm (default 5000)")
    parser.add_argument("--start-steps", type=int, default=6000, help="steps of the common start")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one thread each)")
    parser.add_argument("--only", choices=["train", "eval"], help="one half of the study")
    parser.add_argument("--results", type=Path, default=HERE, help="where results go")
    parser.add_argument("--reevaluate", action="store_true", help="redo kept evaluations")
    parser.add_argument(
        "--data", type=Path, help="one folder for training, validation and tests (--toy)"
    )
    parser.add_argument(
        "--toy", action="store_true", help="4 steps per arm, 2 images (checks the pipeline)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from lae_vbr.paths import shared_dir

    data = shared_dir() / "data"
    tests = {folder: data / name for folder, name in TEST_SETS.items()}
    train_extra: list[str] = []
    eval_extra: list[str] = []
    if args.data:
        tests = dict.fromkeys(TEST_SETS, args.data)
        train_extra += [f"data.train_dir={args.data}", f"data.val_dir={args.data}"]
    if args.toy:
        args.steps = args.start_steps = 4
        train_extra += ["data.max_val_images=2", "logger=csv"]
        eval_extra += ["max_images=2", "study.refine_steps=1", "study.rlambda_step=2.5",
                       "study.ratecontrol_fractions=[0.5]"]  # fmt: skip
    root = args.root.resolve()
    if args.only != "eval":
        train(root, Budget(args.start_steps, args.steps, extra=tuple(train_extra)), args.jobs)
    if args.only != "train":
        commands = eval_commands(root, args.results.resolve(), tests, args.steps, eval_extra)
        evaluate(commands, root, args.jobs, args.reevaluate)


if __name__ == "__main__":
    main()
