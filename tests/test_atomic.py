"""Writes that never destroy a good file: every output goes to a temporary file beside it and
is renamed into place, so a command killed at any moment leaves the old file or the complete
new one; a folder run killed and started again finishes the set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import hydra
import pytest
import torch

from helpers import tiny_cfg, write_noisy_ramp
from lae_vbr.atomic import atomic_path, write_atomic
from lae_vbr.models.registry import save_codec_bundle


def test_write_atomic_replaces_whole_and_a_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "f.bin"
    write_atomic(path, b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # the temporary file is gone
    write_atomic(path, "new")
    assert path.read_bytes() == b"new" and oct(path.stat().st_mode & 0o777) != oct(0o600)


def test_links_special_files_and_permissions_are_respected(tmp_path) -> None:
    target = tmp_path / "target.bin"
    write_atomic(target, b"old")
    target.chmod(0o640)
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    write_atomic(link, b"through the link")
    assert link.is_symlink() and target.read_bytes() == b"through the link"
    assert target.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions
    write_atomic(os.devnull, b"discarded")  # a device: written to, not replaced
    assert Path(os.devnull).is_char_device()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("atomic")
    cfg = tiny_cfg()
    torch.manual_seed(0)
    folder = root / "images"
    folder.mkdir()
    return {
        "model": save_codec_bundle(root / "model.pt", hydra.utils.instantiate(cfg["model"]), cfg),
        "image": write_noisy_ramp(root / "image.png", 384, 512, noise=20, seed=0),
        "other": write_noisy_ramp(root / "other.png", 64, 64, noise=5, seed=1),
        "folder": folder,
        **{f"f{i}": write_noisy_ramp(folder / f"{i}.png", 96, 128, noise=10, seed=i)
           for i in range(4)},
    }  # fmt: skip


def _command(files: dict[str, Path], src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lae_vbr", "compress", str(src), str(out), "--quality", "2",
            "--checkpoint", str(files["model"])]  # fmt: skip


def test_a_compress_killed_at_any_moment_leaves_the_old_or_the_new_file(files, tmp_path) -> None:
    new_file, out = tmp_path / "new.lae", tmp_path / "out.lae"
    subprocess.run(_command(files, files["other"], out), check=True, capture_output=True)
    old = out.read_bytes()
    began = time.perf_counter()
    subprocess.run(_command(files, files["image"], new_file), check=True, capture_output=True)
    duration, new = time.perf_counter() - began, new_file.read_bytes()
    seen = set()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    for step in range(8):  # kill moments spread over a whole run, past its end
        out.write_bytes(old)
        process = subprocess.Popen(_command(files, files["image"], out), **quiet)
        time.sleep(duration * (0.3 + 0.1 * step))
        process.kill()
        process.wait()
        data = out.read_bytes()
        assert data in (old, new), f"a kill {step} left a file that is neither the old nor the new"
        seen.add(data == new)
    assert seen == {False, True}  # kills landed before and after the write


@pytest.mark.parametrize("where", ["while writing", "before the rename"])
def test_a_crash_inside_the_write_keeps_the_old_file(files, tmp_path, where) -> None:
    """The moments a kill from outside rarely hits, hit on purpose: the process kills itself
    half-way through writing the temporary file, or just before renaming it."""
    out = tmp_path / "out.lae"
    subprocess.run(_command(files, files["other"], out), check=True, capture_output=True)
    old = out.read_bytes()
    crash = {
        # the temporary file's writes: half of the data, then the process dies
        "while writing": (
            "import builtins\n"
            "_open = builtins.open\n"
            "class Half:\n"
            "    def __init__(self, f): self.f = f\n"
            "    def __enter__(self): return self\n"
            "    def __exit__(self, *a): self.f.close()\n"
            "    def write(self, data):\n"
            "        self.f.write(data[: len(data) // 2]); self.f.flush(); die()\n"
            "builtins.open = lambda file, mode='r', *a, **k: (\n"
            "    Half(_open(file, mode, *a, **k)) if 'w' in mode and str(file).endswith('.tmp')\n"
            "    else _open(file, mode, *a, **k))"
        ),
        "before the rename": "os.replace = lambda *args: die()",
    }[where]
    code = (
        "import os, pathlib, signal, sys\n"
        "die = lambda: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"{crash}\n"
        "from lae_vbr.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *_command(files, files["image"], out)[3:]],
                          capture_output=True)  # fmt: skip
    assert done.returncode == -9  # killed, as planned
    assert out.read_bytes() == old


def test_a_folder_run_killed_and_started_again_finishes_the_set(files, tmp_path) -> None:
    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run(_command(files, files["folder"], reference), check=True, capture_output=True)
    process = subprocess.Popen(_command(files, files["folder"], out),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "0.lae").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    subprocess.run(_command(files, files["folder"], out), check=True, capture_output=True)
    for expected in sorted(reference.glob("*.lae")):
        assert (out / expected.name).read_bytes() == expected.read_bytes()
    assert sorted(p.name for p in out.glob("*.lae")) == [f"{i}.lae" for i in range(4)]
