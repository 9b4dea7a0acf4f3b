#!/usr/bin/env python3
"""Give results files written before the ``meta`` block one, and make their paths portable,
without running the evaluation again (the numbers are left exactly as they are).

    python scripts/add_results_meta.py experiments/*/results/*.json experiments/*/*/results/*.json \
        experiments/{dlm,rlambda,rate_control}/*.json

For each JSON file (and the ``.md`` record beside a study's JSON): every absolute path in a
string becomes what :func:`lae_vbr.paths.portable_path` writes (``$LAE_VBR_SHARED/…``,
repository-relative, or the file name); a file without ``meta`` gets one, from what its
description states (checkpoint, images, folder, device, threads; the run name and weights
digest of a study) and from git: the commit that added the file and its date. The run's own
commit, command and date were not recorded, and ``meta.note`` says so. When the checkpoint named
is in the repository and has not changed since the file was added (git history), the model's
architecture, metric, λ set and weights digest are read from it. Files that already have a
``meta`` only get their paths fixed; a second run changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.evaluation.provenance import codec_meta, portable_text
from lae_vbr.models.registry import load_codec
from lae_vbr.paths import REPO_ROOT, portable_path

NOTE = (
    "added afterwards by scripts/add_results_meta.py from the description and the git history; "
    "the numbers are the original run's, whose commit, command and date were not recorded"
)
#: What the descriptions of the R-D evaluation and of the studies state.
EVAL = re.compile(r"lae-vbr eval of (?P<ckpt>\S+) on (?P<n>\d+) images of (?P<data>[^;]+);")
STUDY = re.compile(
    r" (?:of|with) (?P<ckpt>\S+) \('(?P<run>[^']+)' \(weights (?P<digest>[0-9a-f]+)\)\) "
    r"on (?P<n>\d+) images of (?P<data>[^;,]+)"
)
DEVICE = re.compile(r"times on (?P<device>\w+) with (?P<threads>\d+) CPU threads")
THREADS = re.compile(r"(?P<threads>\d+) CPU threads")
MERGED = re.compile(r"^\d+ fixed-rate runs: (?P<runs>.+)$")


def _git(*args: str) -> str:
    command = ["git", "-C", str(REPO_ROOT), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def _added(path: Path) -> tuple[str, str]:
    """The commit that added ``path`` and its date (ISO 8601)."""
    log = _git("log", "--diff-filter=A", "--format=%H %cI", "--", str(path)).splitlines()
    commit, date = log[-1].split(" ", 1)
    return commit, date


def _unchanged_since(checkpoint: Path, commit: str) -> bool:
    """Whether ``checkpoint`` is tracked and its last change is ``commit`` or older."""
    last = _git("log", "-1", "--format=%H", "--", str(checkpoint))
    if not last:
        return False
    is_older = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "merge-base", "--is-ancestor", last, commit]
    )
    return is_older.returncode == 0


def _described(description: str) -> dict[str, Any]:
    """What the description states, under the meta keys the evaluation now writes."""
    meta: dict[str, Any] = {}
    if found := EVAL.search(description) or STUDY.search(description):
        meta["model.source"] = "checkpoint"
        meta["paths.model_checkpoint"] = portable_path(found["ckpt"])
        if "run" in found.re.groupindex:
            meta |= {"model.run": found["run"], "model.weights": found["digest"]}
        data = found["data"].strip()
        meta |= {"dataset": Path(data).name, "dataset.path": portable_path(data)}
        meta["dataset.num_images"] = int(found["n"])
    if found := DEVICE.search(description):
        meta["device"] = found["device"]
    if found := THREADS.search(description):
        meta["misc.num_threads"] = int(found["threads"])
    if found := MERGED.match(description):
        meta["model.run"] = found["runs"].split(", ")
    return meta


def _model(meta: dict[str, Any], added_in: str) -> dict[str, Any]:
    """The checkpoint's own meta when it is in the repository and unchanged since; else {}."""
    path = REPO_ROOT / str(meta.get("paths.model_checkpoint", ""))
    if "paths.model_checkpoint" not in meta or not path.is_file():
        return {}
    if not _unchanged_since(path, added_in):
        return {}
    found = codec_meta(ImageCodec(load_codec(path)), meta["paths.model_checkpoint"])
    if meta.get("model.weights", found["model.weights"])[:16] != found["model.weights"][:16]:
        return {}
    return found


def _meta(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A meta block for a file written without one."""
    description = str(data.get("description", ""))
    meta = _described(description)
    if "results" in data and "paths.model_checkpoint" not in meta and "model.run" not in meta:
        meta = {"type": "image", "model.source": "classical", "model.name": path.stem}
    elif "results" in data and "model.run" not in meta:
        meta["model.run"] = data.get("name")
    commit, date = _added(path)
    meta = {**_model(meta, commit), **meta}  # the checkpoint's keys first, as in new files
    return {**meta, "git.added_in": commit, "date.added": date, "meta.note": NOTE}


def _portable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    return portable_text(value) if isinstance(value, str) else value


def update(path: Path) -> bool:
    """Rewrite one file (and its ``.md`` record); True when anything changed."""
    text = path.read_text()
    data = json.loads(text)
    if "meta" not in data:
        meta = _meta(path, data)
        first = [k for k in ("name", "description") if k in data]
        data = {**{k: data[k] for k in first}, "meta": meta, **data}
    data = _portable(data)
    indent = 2 if text.startswith('{\n  "') else 1
    new = json.dumps(data, indent=indent, allow_nan=False) + "\n"
    changed = new != text
    path.write_text(new)
    md = path.with_suffix(".md")
    if md.is_file() and "results" not in data:
        old_md = md.read_text()
        md.write_text(portable_text(old_md))
        changed |= md.read_text() != old_md
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    for path in parser.parse_args().files:
        print(f"{'updated' if update(path.resolve()) else 'unchanged'}: {path}")


if __name__ == "__main__":
    main()
