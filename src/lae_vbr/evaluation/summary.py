"""The summary of a sweep: every run's R-D curve in one plot and one BD-rate table.

``python src/eval.py study=summary runs=logs/train/multiruns/<time>`` finds the runs below the
given folders (a run is a folder with ``checkpoints/<checkpoint_name>``), evaluates each run once
with the settings of the ``rd`` study (test set, λ grid, device; the result is kept in
``<run>/eval`` and reused by later summaries) and writes to its own output folder ``rd.png``,
``bd_rate.md``/``.json`` (every curve against every other one and against the anchors) and the
curves in ``results/``. Fixed-rate runs of one model and distortion, e.g. the six runs of a
``fixed_tcm`` sweep, are merged into one curve. ``results=[glob, ...]`` adds results files of
runs evaluated elsewhere.

From Python: :func:`find_runs`, :func:`run_curve` (with any function that evaluates a
checkpoint), :func:`sweep_curves`, then :func:`~.runner.write_rd`; :func:`summarize` is the
Hydra adapter.
"""

from __future__ import annotations

import glob
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lae_vbr.models.registry import load_codec

from .bdrate import BDSettings, bd_rate_table
from .inputs import InputImage, load_test_images
from .provenance import merge_meta
from .results import EvalError, RDCurve, curve_from_points, read_curve, resolve_anchors
from .runner import EvalReport, evaluate_with, write_rd

__all__ = [
    "distinct_names",
    "find_runs",
    "merge_curves",
    "run_curve",
    "summarize",
    "sweep_curves",
]

log = logging.getLogger(__name__)

#: Evaluates a checkpoint into an output folder and returns its curve.
Evaluator = Callable[[Path, Path], RDCurve]


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


def run_curve(
    run: Path, checkpoint_name: str, evaluate: Evaluator, reevaluate: bool = False
) -> RDCurve:
    """The run's curve: ``<run>/eval/results/*.json`` if there is exactly one (an earlier
    evaluation; unless ``reevaluate``), else ``evaluate(checkpoint, <run>/eval)`` now."""
    cached = sorted((run / "eval" / "results").glob("*.json"))
    if len(cached) == 1 and not reevaluate:
        log.info("%s: using %s", run.name, cached[0])
        return read_curve(cached[0], kind="model")
    for old in cached:
        old.unlink()
    return evaluate(run / "checkpoints" / checkpoint_name, run / "eval")


def _fixed_rate_key(checkpoint: Path) -> str | None:
    """What fixed-rate runs of one model share (model config and distortion); None when the
    run's model is variable-rate (asked of the model) or its checkpoint has no config."""
    loaded = load_codec(checkpoint)
    if loaded.rate_axis.variable or not loaded.config:
        return None
    model = loaded.config.get("model") or {}
    return json.dumps([model, loaded.config["lmbda"].get("distortion")], sort_keys=True)


def sweep_curves(
    runs: Sequence[Path], checkpoint_name: str, curve: Callable[[Path], RDCurve]
) -> list[RDCurve]:
    """``curve(run)`` of every run, fixed-rate runs of one model merged into one curve."""
    curves: list[RDCurve] = []
    fixed: dict[str, list[RDCurve]] = {}
    for run in runs:
        key = _fixed_rate_key(run / "checkpoints" / checkpoint_name)
        (curves if key is None else fixed.setdefault(key, [])).append(curve(run))
    return curves + [merge_curves(group) for group in fixed.values()]


def merge_curves(curves: Sequence[RDCurve]) -> RDCurve:
    """One curve from the points of several (fixed-rate runs of one model: one point each)."""
    names = {re.sub(r"_l[0-9.e+-]+$", "", c.name) for c in curves}
    name = names.pop() if len(names) == 1 else "+".join(c.name for c in curves)
    points = [
        {key: values[i] for key, values in c.results.items()}
        for c in curves
        for i in range(len(c.results["bpp"]))
    ]
    runs = [str(c.meta.get("model.run") or c.name) for c in curves]
    description = f"{len(curves)} fixed-rate runs: " + ", ".join(runs)
    meta = merge_meta([c.meta for c in curves])
    return curve_from_points(name, description, points, "model", meta)


def _run_name(curve: RDCurve) -> str | None:
    run = curve.meta.get("model.run")
    return run if isinstance(run, str) and run else None


def _run_folder(curve: RDCurve) -> str | None:
    """The run folder of ``<run>/eval/results/<name>.json``, else the file's stem."""
    if curve.path is None:
        return None
    if curve.path.parent.name == "results" and curve.path.parent.parent.name == "eval":
        return curve.path.parents[2].name
    return curve.path.stem


def distinct_names(curves: Sequence[RDCurve]) -> None:
    """Curves of one name (runs that differ in what ``<arch>-<metric>`` does not say: the
    learning rate, the stage of a recipe) get the run's name appended, else its folder's, so
    that the plot and the table tell them apart; :class:`EvalError` when neither does."""
    groups: dict[str, list[RDCurve]] = {}
    for curve in curves:
        groups.setdefault(curve.name, []).append(curve)
    for name, group in groups.items():
        for hint in (_run_name, _run_folder) if len(group) > 1 else ():
            labels = [hint(c) for c in group]
            if all(labels) and len(set(labels)) == len(group):
                for curve, label in zip(group, labels, strict=True):
                    curve.name = f"{name} ({label})"
                break
    if len({c.name for c in curves}) < len(curves):
        raise EvalError(f"two curves share a name: {[c.name for c in curves]}")


def _evaluator(cfg: DictConfig) -> Evaluator:
    """Evaluate one checkpoint as ``study=rd`` would with ``cfg``, without anchors, classical
    codecs or loggers; the test images are read once, on first use."""
    images: list[InputImage] = []

    def evaluate(checkpoint: Path, out_dir: Path) -> RDCurve:
        if not images:
            images.extend(load_test_images(cfg.test_dir, cfg.get("max_images")))
        return evaluate_with(cfg, images, out_dir, [checkpoint]).curves[0]

    return evaluate


def _results_files(value: Any) -> list[Path]:
    patterns = _as_list(value)
    found = [Path(p) for pattern in patterns for p in sorted(glob.glob(pattern))]
    if patterns and not found:
        raise EvalError(f"results: nothing matches {patterns}")
    return found


def summarize(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra adapter of ``study=summary``: evaluate (or reuse) every run, then plot and
    BD-rate all curves together."""
    roots, checkpoint = _as_list(cfg.get("runs")), str(cfg.checkpoint_name)
    extra = _results_files(cfg.get("results"))
    runs = find_runs(roots, checkpoint)
    if not runs and not extra:
        raise EvalError("nothing to summarise: set runs=<sweep or run folders> or results=<glob>")
    anchors = resolve_anchors(
        cfg.get("anchors") or [], cfg.paths.anchors_dir, cfg.get("extra_anchors") or []
    )
    bd = BDSettings.from_config(cfg.get("bd_rate"), metrics=("psnr-rgb",))
    evaluate, again = _evaluator(cfg), bool(cfg.get("reevaluate"))
    curves = sweep_curves(runs, checkpoint, lambda run: run_curve(run, checkpoint, evaluate, again))
    curves += [read_curve(p, kind="model") for p in extra]
    distinct_names(curves)
    table = bd_rate_table(curves, [*curves, *anchors], bd.metrics, bd.method)
    title = f"{len(curves)} curves from {', '.join(Path(r).name for r in roots) or 'results'}"
    max_bpp = (cfg.get("plot") or {}).get("max_bpp")
    files = write_rd(EvalReport(curves, anchors, table), cfg.paths.output_dir, bd, max_bpp, title)
    log.info("summary of %d runs: %s", len(runs), cfg.paths.output_dir)
    return files
