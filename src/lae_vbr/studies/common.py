"""What the studies share: their error, how a record is written, and what their Hydra adapters
read from the config (one checkpoint, the test images, the output folder)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lae_vbr.atomic import write_atomic
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.evaluation import EvalError
from lae_vbr.evaluation.files import write_json
from lae_vbr.evaluation.inputs import InputImage, checkpoint_paths, load_test_images, open_codec
from lae_vbr.evaluation.provenance import codec_meta, dataset_meta, run_meta
from lae_vbr.paths import portable_path

__all__ = ["StudyError", "StudyInputs", "study_codec", "study_inputs", "write_record"]

log = logging.getLogger(__name__)


class StudyError(EvalError):
    """A study cannot run as configured (shown as one line by ``src/eval.py``)."""


def write_record(
    out_dir: str | PathLike,
    stem: str,
    title: str,
    description: str,
    body: str,
    payload: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """``<stem>.json`` (the description, a ``meta`` block as in R-D results files: ``meta``
    (model and test set, :attr:`StudyInputs.meta`) and the run's version, commit, command and
    date; then ``payload``) and ``<stem>.md`` (a title, the description, the Markdown
    ``body``): the record kept under ``experiments/``. The body is logged too, so a run's
    console shows the result."""
    out = Path(out_dir)
    record = {"description": description, "meta": {**(meta or {}), **run_meta()}, **payload}
    files = {"json": write_json(out / f"{stem}.json", record)}
    files["md"] = out / f"{stem}.md"
    write_atomic(files["md"], f"# {title}\n\n{description}\n\n{body}")
    log.info("\n%s", body)
    log.info("results: %s", out)
    return files


# -- what the Hydra adapters read from the config ------------------------------------------
@dataclass
class StudyInputs:
    """A study's model, test images and output folder, as its config names them."""

    codec: ImageCodec
    images: list[InputImage]
    out_dir: Path
    about: str  # "<checkpoint> (<model id>) on <n> images of <folder>", for descriptions
    meta: dict[str, Any] = field(default_factory=dict)  # model and test set, for write_record


def _name(cfg: DictConfig) -> str:
    return str(cfg.study.get("name") or cfg.study.get("_target_", "study"))


def study_codec(cfg: DictConfig, needs_rate: bool = True) -> ImageCodec:
    """The one checkpoint of ``cfg.checkpoint`` on ``cfg.device``, ready to code; a
    StudyError names the study when it is missing, a list, or fixed-rate where variable-rate
    is needed."""
    value = cfg.get("checkpoint")
    if not value:
        raise StudyError(f"study '{_name(cfg)}' needs a model: set checkpoint=PATH")
    if not isinstance(value, str | PathLike):
        raise StudyError(f"study '{_name(cfg)}' takes one checkpoint, got a list")
    (path,) = checkpoint_paths(value)
    codec = open_codec(path, str(cfg.get("device", "auto")))
    if needs_rate and not codec.rate_axis.variable:
        raise StudyError(
            f"study '{_name(cfg)}' needs a variable-rate model; {path} holds the fixed-rate "
            f"model {codec.id}"
        )
    return codec


def study_inputs(cfg: DictConfig, needs_rate: bool = True) -> StudyInputs:
    """:func:`study_codec`, the first ``cfg.max_images`` of ``cfg.test_dir`` and the run's
    output folder; paths in ``about`` and ``meta`` are portable (records are shared)."""
    codec = study_codec(cfg, needs_rate)
    images = load_test_images(cfg.test_dir, cfg.get("max_images"))
    checkpoint, folder = portable_path(cfg.checkpoint), portable_path(cfg.test_dir)
    about = f"{checkpoint} ({codec.id}) on {len(images)} images of {folder}"
    device = next(codec.model.parameters()).device
    meta = {**codec_meta(codec, checkpoint), **dataset_meta(cfg.test_dir, len(images), device)}
    return StudyInputs(codec, images, Path(cfg.paths.output_dir), about, meta)
