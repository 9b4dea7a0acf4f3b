"""The claims study's evaluation: every arm of an equal-budget study at one budget, on one test
set, with real bitstreams (``experiments/claims``).

``python src/eval.py study=claims study.root=ROOT study.step=N test_dir=FOLDER study.out=DIR``

The arms are found in ``ROOT/arms/*/*/checkpoints/step_{N:06d}.ckpt`` and named from what each
checkpoint says it is (its codec description and seed), not from folder names: the fixed-rate
family (one model per λ, the first seed) is the curve ``fixed``; ``lae``, ``lae_no_context``,
``lae_encoder_only`` and ``gain`` are the variable-rate arms; a run of another seed gives
``<arm>_seed2`` (for the family: the family with that λ's model swapped for the other seed's);
``lae_dlm`` and ``fixed_dlm`` are ``lae`` and ``fixed`` with the default latent refinement.
Written to ``DIR``: one CompressAI-format results file per curve (``<curve>.json``),
``bd_rate.json|md`` (every variable-rate curve and ``fixed_seed2`` against ``fixed``,
``lae_dlm`` against ``fixed_dlm``, ``lae`` against ``gain``, on PSNR and MS-SSIM in dB),
``rlambda.json`` (each LAE model's R-λ fit), ``rate_control.json`` (each LAE model's ``--bpp``
accuracy; both with no models under ``study.rate_axis=false``) and ``rd.png``. Measure →
summarise → write, with :func:`run` the Hydra adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lae_vbr.codec.rate_control import encode_to_bpp
from lae_vbr.evaluation import BDResult, RDCurve, bd_rate
from lae_vbr.evaluation.bdrate import BDSettings, write_bd_rates
from lae_vbr.evaluation.coding import lambda_grid
from lae_vbr.evaluation.files import write_json
from lae_vbr.evaluation.inputs import InputImage, load_test_images, open_codec, torch_threads
from lae_vbr.evaluation.measure import Measured, RDSettings, curve_of, measure_checkpoints
from lae_vbr.evaluation.plots import rd_plot
from lae_vbr.evaluation.results import write_curve
from lae_vbr.models.registry import describe_checkpoint
from lae_vbr.models.state_dict import read_checkpoint

from .common import StudyError
from .ratecontrol import measure_ratecontrol, summarise_ratecontrol
from .rlambda import measure_rlambda, summarise_rlambda

__all__ = ["Arm", "find_arms", "measure_arms", "run", "summarise_arms", "write_arms"]

log = logging.getLogger(__name__)

#: The quality metrics of the BD-rates (CompressAI's key names).
METRICS = ("psnr-rgb", "ms-ssim-rgb-db")
#: Every variable-rate curve is compared with the family; these pairs too.
PAIRS = (("lae_dlm", "fixed_dlm"), ("lae", "gain"))


@dataclass(frozen=True)
class Arm:
    """One curve: its checkpoints (several for the fixed-rate family) and refinement steps."""

    name: str
    checkpoints: tuple[Path, ...]
    refine_steps: int = 0

    @property
    def lae(self) -> bool:
        """An LAE model coded plainly (the R-λ fit and rate control apply)."""
        return self.name.startswith("lae") and not self.refine_steps


def _identity(path: Path) -> tuple[str, float, int]:
    """(arm name, its λ for a fixed-rate model, seed) of one checkpoint."""
    checkpoint = read_checkpoint(path)
    description = describe_checkpoint(checkpoint, path.stem)
    if description is None:
        raise StudyError(f"{path}: not a model of this project's (no codec description)")
    name = description.rate
    if name == "lae":
        options = description.rate_args
        name += "" if options.get("contextual", True) else "_no_context"
        name += "" if options.get("decoder_lae", True) else "_encoder_only"
    lmbda = description.lmbdas[0] if name == "fixed" else 0.0
    return name, lmbda, int((checkpoint.config or {}).get("seed", 0))


def find_arms(root: Path, step: int, first_seed: int, refine_steps: int) -> list[Arm]:
    """The study's curves at budget ``step`` (see the module); StudyError when none."""
    paths = sorted(Path(root).glob(f"arms/*/*/checkpoints/step_{step:06d}.ckpt"))
    if not paths:
        raise StudyError(f"no checkpoints step_{step:06d}.ckpt under {root}/arms/*/*/checkpoints")
    family: dict[int, dict[float, Path]] = {}
    arms: dict[str, tuple[Path, ...]] = {}
    for path in paths:
        name, lmbda, seed = _identity(path)
        suffix = "" if seed == first_seed else "_seed2"
        if name == "fixed":
            family.setdefault(seed, {})[lmbda] = path
        else:
            arms[name + suffix] = (path,)
    if len(family.get(first_seed, {})) < 2:
        raise StudyError(f"the fixed-rate family at step {step} has fewer than two models")
    first = family.pop(first_seed)
    result = [Arm("fixed", tuple(first[v] for v in sorted(first)))]
    for other in family.values():  # another seed's members replace the first seed's
        swapped = {**first, **other}
        result.append(Arm("fixed_seed2", tuple(swapped[v] for v in sorted(swapped))))
    result += [Arm(name, paths) for name, paths in sorted(arms.items())]
    if "lae" in arms:
        result.append(Arm("lae_dlm", arms["lae"], refine_steps))
    result.append(Arm("fixed_dlm", result[0].checkpoints, refine_steps))
    return result


def measure_arms(
    arms: Sequence[Arm], images: Sequence[InputImage], settings: RDSettings, source: str
) -> dict[str, RDCurve]:
    """Every arm's R-D curve; a checkpoint shared by arms (the family) is coded once."""
    done: dict[tuple[Path, int], Measured] = {}
    curves = {}
    for arm in arms:
        parts = []
        for path in arm.checkpoints:
            key = (path, arm.refine_steps)
            if key not in done:
                done[key] = measure_checkpoints(
                    [path], images, replace(settings, refine_steps=arm.refine_steps),
                    source=source,
                )  # fmt: skip
            parts.append(done[key])
        rows = [row for part in parts for row in part.rows]
        measured = replace(parts[0], name=arm.name, rows=rows)
        curves[arm.name] = curve_of(measured)
        log.info("%s: %d points", arm.name, len(curves[arm.name].results["bpp"]))
    return curves


def measure_rate_axis(
    arms: Sequence[Arm], images: Sequence[InputImage], step: float, fractions: Sequence[float]
) -> dict[str, dict[str, Any]]:
    """Each plainly coded LAE model's R-λ fit over λ indices ``step`` apart (free slope, R²,
    slope-1 error) and ``--bpp`` accuracy (the default method, targets at ``fractions`` of
    each image's range)."""
    found = {}
    for arm in (a for a in arms if a.lae):
        codec = open_codec(arm.checkpoints[0], "cpu")
        grid = lambda_grid(codec.max_index + 1, None, step)
        fits = summarise_rlambda(measure_rlambda(codec, images, grid)).by_rate
        free = next(f for f in fits if f["rate"] == "file" and f["slope_mode"] == "free")
        one = next(f for f in fits if f["rate"] == "file" and f["slope_mode"] == "fixed")
        rows = measure_ratecontrol(codec, images, {"estimate": encode_to_bpp}, None, fractions)
        summary = [s for s in summarise_ratecontrol(rows) if s["kind"] == "bpp"]
        # a model whose rate barely moves with λ has no target inside its range
        control = (
            summary[0] if summary else {"kind": "bpp", "cases": 0, "note": "no target in range"}
        )
        found[arm.name] = {
            "rlambda": {
                "slope_free_mean": free["slope_mean"],
                "slope_free_std": free["slope_std"],
                "r2_free_mean": free["r2_mean"],
                "r2_slope1_mean": one["r2_mean"],
                "mean_abs_err_bpp_slope1": one["mean_abs_err_bpp"],
                "mean_rel_err_slope1": one["mean_rel_err"],
            },
            "rate_control_bpp": control,
        }
    return found


def summarise_arms(curves: Mapping[str, RDCurve]) -> list[BDResult]:
    """The BD-rates of the study (see the module), on PSNR and MS-SSIM in dB."""
    pairs = [(name, "fixed") for name in curves if name not in ("fixed", "fixed_dlm")]
    pairs += [pair for pair in PAIRS if all(name in curves for name in pair)]
    return [
        bd_rate(curves[anchor], curves[test], metric)
        for test, anchor in pairs
        for metric in METRICS
    ]


def write_arms(
    out: Path,
    curves: Mapping[str, RDCurve],
    bd: Sequence[BDResult],
    rate_axis: Mapping[str, Any],
    about: Mapping[str, Any],
) -> dict[str, Path]:
    """The results files of the study (see the module)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: write_curve(curve, out / f"{name}.json") for name, curve in curves.items()}
    files |= write_bd_rates(bd, out, BDSettings())
    lae = {name: v["rlambda"] for name, v in rate_axis.items()}
    control = {name: v["rate_control_bpp"] for name, v in rate_axis.items()}
    files["rlambda"] = write_json(out / "rlambda.json", {**about, "models": lae})
    files["rate_control"] = write_json(out / "rate_control.json", {**about, "models": control})
    plotted = [c for name, c in curves.items() if not name.endswith("_seed2")]
    files["plot"] = rd_plot(plotted, out / "rd.png", title=str(about.get("title", "")))
    return files


def run(cfg: DictConfig) -> dict[str, Path]:
    """The Hydra adapter of ``study=claims``: find the arms, measure, summarise, write."""
    study = cfg.study
    if not study.get("root") or study.get("step") is None:
        raise StudyError("study=claims needs study.root=<the study's runs> and study.step=N")
    root, step = Path(study.root), int(study.step)
    arms = find_arms(root, step, int(study.first_seed), int(study.refine_steps))
    source = str(cfg.test_dir)
    images = load_test_images(source, cfg.get("max_images"))
    settings = replace(RDSettings.from_config(cfg), lmbda_step=1.0, warmup=False)
    fractions = list(study.ratecontrol_fractions)
    with torch_threads(cfg.get("num_threads")):
        curves = measure_arms(arms, images, settings, source)
        rate_axis = (
            measure_rate_axis(arms, images, float(study.rlambda_step), fractions)
            if study.get("rate_axis", True)
            else {}
        )
    about = {
        "title": f"claims study at step {step}, {len(images)} images of {Path(source).name}",
        "arms": {arm.name: [str(p.relative_to(root)) for p in arm.checkpoints] for arm in arms},
    }
    out = Path(study.out) if study.get("out") else Path(cfg.paths.output_dir)
    return write_arms(out, curves, summarise_arms(curves), rate_axis, about)
