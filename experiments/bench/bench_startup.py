"""Time the command line's start-up against ``python -c "import torch"``, runs interleaved.

    python experiments/bench/bench_startup.py --repeats 15 [--baseline-src OLD/src] \
        [--importtime] --out experiments/bench/startup_cpu.json

Each round runs every command once, in one order (``import torch``, then ``lae-vbr compress``
of a 1×1 PNG with the bundled demo model, ``--help`` and ``info``; with ``--baseline-src`` the
same three commands of an older source tree follow each of ours), so a change in the machine's
load hits every command alike. Reported per command: the median, quartiles and range of the wall
time of the whole process, the median of the per-round ratio to ``import torch`` (the target:
compress within 1.6×, ``--help`` and ``info`` within 0.5 s), and the same for the process's CPU
time (user + system; on a loaded machine it moves less than the wall time). ``--importtime`` adds
the slowest imports of one compress per source tree (``python -X importtime``), ``--phases N``
the median time of each stage of a compress (imports, checkpoint, model, tables, encode) over
N runs per tree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
#: The console script's body (``lae-vbr`` as installed runs exactly this).
CLI = "import sys; from lae_vbr.cli import main; sys.exit(main())"


def _commands(tmp: Path) -> dict[str, list[str]]:
    """The timed command lines (after ``python``), by name."""
    png, lae = tmp / "one.png", tmp / "one.lae"
    return {
        "compress": ["-c", CLI, "compress", str(png), str(tmp / "out.lae"), "--quality", "3"],
        "help": ["-c", CLI, "--help"],
        "info": ["-c", CLI, "info", str(lae)],
    }


def _run(args: list[str], src: Path | None) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of ``python ARGS`` with ``src`` as the package's
    source (None: no path)."""
    env = {**os.environ, "PYTHONPATH": str(src) if src else ""}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, args)
    return wall, usage.ru_utime + usage.ru_stime


def _prepare(tmp: Path) -> None:
    """A 1×1 PNG and a file coded from it (for ``info``), with this tree's code."""
    code = (
        "import sys; from PIL import Image; "
        "Image.new('RGB', (1, 1), (120, 30, 200)).save(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp / "one.png")], check=True)
    args = [*_commands(tmp)["compress"][:4], str(tmp / "one.lae"), "--quality", "3"]
    _run(args, SRC)


def _stats(times: list[float]) -> dict:
    q1, median, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return {
        "median_s": round(median, 3),
        "q1_s": round(q1, 3),
        "q3_s": round(q3, 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "runs_s": [round(t, 3) for t in times],
    }


def _ratio(runs: list[float], base: list[float]) -> float:
    """The median over the rounds of run / base (both of the same round)."""
    return round(statistics.median(t / b for t, b in zip(runs, base, strict=True)), 3)


def _importtime(args: list[str], src: Path, top: int = 12) -> list[dict]:
    """The ``top`` imports with the largest cumulative time of one run, leaving out torch's
    own submodules (``import torch`` is the yardstick)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args], env=env, capture_output=True, text=True
    )
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            _, cum_us, indent, name = match.groups()
            if name.startswith("torch."):
                continue
            rows.append({"module": name, "depth": len(indent) // 2, "cumulative_s": int(cum_us)})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return [{**r, "cumulative_s": round(r["cumulative_s"] / 1e6, 3)} for r in rows[:top]]


#: The stages of a 1×1 compress, timed inside one process (printed as JSON).
PHASES = """
import json, sys, time
marks = [time.perf_counter()]
def lap(): marks.append(time.perf_counter())
import torch; lap()
from lae_vbr.codec.image_codec import ImageCodec, default_checkpoint; lap()
from lae_vbr.codec.images import read_image; lap()
import hydra.utils; lap()
from lae_vbr.models.registry import LoadedCodec
from lae_vbr.models.state_dict import read_checkpoint
checkpoint = read_checkpoint(default_checkpoint()); lap()
model = hydra.utils.instantiate(checkpoint.config["model"]); lap()
model.load_state_dict(checkpoint.state_dict); lap()
lmbdas = [float(v) for v in checkpoint.config["lmbda"]["values"]]
codec = ImageCodec(LoadedCodec(model.eval(), lmbdas, "demo", checkpoint.config)); lap()
stream = codec.encode(read_image(sys.argv[1]), 3.0); lap()
names = ["import torch", "import the codec", "import images", "import hydra", "read checkpoint",
         "build model", "load_state_dict", "ImageCodec (tables, digest)", "encode 1x1"]
print(json.dumps(dict(zip(names, [b - a for a, b in zip(marks, marks[1:])]))))
"""


def _phases(trees: dict[str, Path], png: Path, repeats: int) -> dict:
    """Median seconds of each stage of a compress per source tree, runs interleaved."""
    runs: dict[str, list[dict]] = {t: [] for t in trees}
    for _ in range(repeats):
        for tree, src in trees.items():
            env = {**os.environ, "PYTHONPATH": str(src)}
            done = subprocess.run(
                [sys.executable, "-c", PHASES, str(png)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            runs[tree].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        tree: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
        for tree, rs in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline-src", type=Path, help="an older checkout's src/ to compare")
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--phases", type=int, default=0, help="time the stages N times")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    trees = {"ours": SRC, **({"baseline": args.baseline_src} if args.baseline_src else {})}
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        _prepare(tmp)
        commands = _commands(tmp)
        for _ in range(args.repeats):
            runs = {"import torch": _run(["-c", "import torch"], None)}
            for name, command in commands.items():
                for tree, src in trees.items():
                    runs[f"{name} ({tree})"] = _run(command, src)
            for name, (wall, used) in runs.items():
                times.setdefault(name, []).append(wall)
                cpu.setdefault(name, []).append(used)
        if args.importtime:
            imports = {t: _importtime(commands["compress"], s) for t, s in trees.items()}
        if args.phases:
            phases = _phases(trees, tmp / "one.png", args.phases)
            print(json.dumps(phases, indent=2))
    results = {
        name: {
            **_stats(runs),
            "ratio_to_torch_median": _ratio(runs, times["import torch"]),
            "cpu_median_s": round(statistics.median(cpu[name]), 3),
            "cpu_ratio_to_torch_median": _ratio(cpu[name], cpu["import torch"]),
        }
        for name, runs in times.items()
    }
    for name, r in results.items():
        wall = f"wall {r['median_s']:.3f} s [{r['q1_s']:.3f}, {r['q3_s']:.3f}]"
        ratios = f"÷ import torch {r['ratio_to_torch_median']:.2f}"
        used = f"CPU {r['cpu_median_s']:.3f} s, ÷ import torch {r['cpu_ratio_to_torch_median']:.2f}"
        print(f"{name:22s} {wall} {ratios}; {used}", flush=True)
    record = {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_end": os.getloadavg(),
        "repeats": args.repeats,
        "lae_vbr_on_path": shutil.which("lae-vbr"),
        "results": results,
        **({"slowest_imports_of_compress": imports} if args.importtime else {}),
        **({"stages_of_compress_median_s": phases} if args.phases else {}),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
