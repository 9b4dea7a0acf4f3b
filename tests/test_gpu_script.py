"""``experiments/gpu/run.sh``, the one script a lent GPU runs, works before a GPU is lent: its
dry run does every step on the CPU at small sizes and writes every record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_script_dry_run_writes_every_record(tmp_path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "experiments" / "gpu" / "run.sh"), "--dry-run"],
                          capture_output=True, text=True, env=env, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((tmp_path / "gpu_checks.json").read_text())
    assert record["dry_run"] is True
    assert all(rate > 0 for rate in record["training_images_per_s"].values())
    assert set(record["coding_768x512"]) == {"compress_s", "decompress_s"}
    for way in ("cpu_to_device", "device_to_cpu"):
        crossed = record["cross_device"][way]
        assert crossed["files"] == crossed["decoded"] > 0 and crossed["symbol_mismatches"] == 0
    assert "val/psnr/l0" in (tmp_path / "bf16_run.log").read_text()
