"""The summary of a sweep: every run's R-D curve in one plot and one BD-rate table.

``python src/eval.py study=summary runs=logs/train/multiruns/<time>`` finds the runs below the
given folders (a run is a folder with ``checkpoints/<checkpoint_name>``), evaluates each run once
with the settings of the ``rd`` study (test set, λ grid, device; the result is kept in
``<run>/eval`` and reused by later summaries) and writes to its own output folder ``rd.png``,
``bd_rate.md``/``.json`` (every curve against every other one and against the anchors) and the
curves in ``results/``. Fixed-rate runs of one model and distortion, e.g. the six runs of a
``fixed_tcm`` sweep, are merged into one curve. ``results=[glob, ...]`` adds results files of
runs evaluated elsewhere.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from .bdrate import bd_rate_table, to_json, to_markdown
from .plots import rd_plot
from .results import (
    EvalError,
    RDCurve,
    curve_from_points,
    read_curve,
    resolve_anchors,
    slug,
    write_curve,
)
from .runner import evaluate

__all__ = ["find_runs", "merge_curves", "summarize"]

log = logging.getLogger(__name__)


def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str | Path):
        return [str(value)]
    return [str(v) for v in value]


def find_runs(roots: Sequence[str], checkpoint_name: str = "last.ckpt") -> list[Path]:
    """Run folders at or below ``roots`` (sweep folders or runs), in sorted order."""
    runs: list[Path] = []
    for root in roots:
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise EvalError(f"runs: {root} is not a folder")
        found = sorted(p.parent.parent for p in folder.rglob(f"checkpoints/{checkpoint_name}"))
        if not found:
            raise EvalError(f"no run below {root} has checkpoints/{checkpoint_name}")
        runs += [r for r in found if r not in runs]
    return runs


def _stored_config(path: Path) -> dict[str, Any]:
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return dict((obj.get("hyper_parameters") or {}).get("cfg") or {})


def _evaluate_run(run: Path, cfg: DictConfig) -> RDCurve:
    """The run's curve: ``<run>/eval/results/*.json`` if there is one, else measured now."""
    cached = sorted((run / "eval" / "results").glob("*.json"))
    if len(cached) == 1 and not cfg.get("reevaluate"):
        log.info("%s: using %s", run.name, cached[0])
        return read_curve(cached[0], kind="model")
    sub = copy.deepcopy(cfg)
    with open_dict(sub):
        sub.checkpoint = str(run / "checkpoints" / cfg.checkpoint_name)
        sub.name = None
        sub.classical = None
        sub.anchors = []
        sub.extra_anchors = []
        sub.logger = None
        sub.paths.output_dir = str(run / "eval")
    for old in cached:
        old.unlink()
    return evaluate(sub).curves[0]


def merge_curves(curves: Sequence[RDCurve]) -> RDCurve:
    """One curve from the points of several (fixed-rate runs of one model: one point each)."""
    names = {re.sub(r"_l[0-9.e+-]+$", "", c.name) for c in curves}
    name = names.pop() if len(names) == 1 else "+".join(c.name for c in curves)
    points = [
        {key: values[i] for key, values in c.results.items()}
        for c in curves
        for i in range(len(c.results["bpp"]))
    ]
    description = f"{len(curves)} fixed-rate runs: " + ", ".join(c.name for c in curves)
    return curve_from_points(name, description, points, "model")


def summarize(cfg: DictConfig) -> dict[str, Path]:
    """Evaluate (or reuse) every run, then plot and BD-rate all curves together."""
    roots = _as_list(cfg.get("runs"))
    patterns = _as_list(cfg.get("results"))
    extra = [Path(p) for pattern in patterns for p in sorted(glob.glob(pattern))]
    if patterns and not extra:
        raise EvalError(f"results: nothing matches {patterns}")
    runs = find_runs(roots, str(cfg.checkpoint_name))
    if not runs and not extra:
        raise EvalError("nothing to summarise: set runs=<sweep or run folders> or results=<glob>")
    anchors = resolve_anchors(
        cfg.get("anchors") or [], cfg.paths.anchors_dir, cfg.get("extra_anchors") or []
    )

    curves: list[RDCurve] = []
    fixed: dict[str, list[RDCurve]] = {}
    for run in runs:
        curve = _evaluate_run(run, cfg)
        stored = _stored_config(run / "checkpoints" / cfg.checkpoint_name)
        model = stored.get("model") or {}
        if model and not (model.get("lae") or {}).get("enabled", False):
            key = json.dumps([model, stored["lmbda"].get("distortion")], sort_keys=True)
            fixed.setdefault(key, []).append(curve)
        else:
            curves.append(curve)
    curves += [merge_curves(group) for group in fixed.values()]
    curves += [read_curve(p, kind="model") for p in extra]
    if len({c.name for c in curves}) < len(curves):
        raise EvalError(f"two curves share a name: {[c.name for c in curves]}")

    out = Path(cfg.paths.output_dir)
    files = {c.name: write_curve(c, out / "results" / f"{slug(c.name)}.json") for c in curves}
    plot_cfg = cfg.get("plot") or {}
    title = f"{len(curves)} curves from {', '.join(Path(r).name for r in roots) or 'results'}"
    files["plot"] = rd_plot([*anchors, *curves], out / "rd.png", plot_cfg.get("max_bpp"), title)
    bd_cfg = cfg.get("bd_rate") or {}
    metrics = list(bd_cfg.get("metrics", ["psnr-rgb"]))
    method = str(bd_cfg.get("method", "akima"))
    table = bd_rate_table(curves, [*curves, *anchors], metrics, method)
    min_overlap = float(bd_cfg.get("min_overlap", 0.75))
    markdown = to_markdown(table, min_overlap)
    files["bd_rate_md"] = out / "bd_rate.md"
    files["bd_rate_md"].write_text(markdown)
    files["bd_rate_json"] = out / "bd_rate.json"
    files["bd_rate_json"].write_text(to_json(table, method, min_overlap))
    log.info("\n%s", markdown)
    log.info("summary of %d runs: %s", len(runs), out)
    return files
