"""What a coding command needs before it codes: its target, the rate check, the model.

The target is parsed once from the options (:class:`~lae_vbr.codec.request.Target`) before
anything is loaded. A missing or superfluous rate option is refused from what the checkpoint
file records (:mod:`lae_vbr.codec.peek`, no torch: 0.17 s against 7 s for loading the model),
and again by the loaded model's rate axis, which stays the authority. The model is loaded in a
process set up to code images of the size at hand.
"""

from __future__ import annotations

import argparse
import importlib.resources
from pathlib import Path
from typing import TYPE_CHECKING

from lae_vbr.codec.regions import read_gray
from lae_vbr.codec.request import Target
from lae_vbr.codec.targets import TargetError
from lae_vbr.errors import RateError
from lae_vbr.lean_imports import import_compressai_lean

from .terminal import UsageError

if TYPE_CHECKING:
    from lae_vbr.codec.image_codec import ImageCodec

__all__ = ["check_rate", "load_codec_for", "precheck_rate", "target_of"]


def target_of(args: argparse.Namespace, roi: Path | None = None) -> Target:
    """The command's target, checked before anything is loaded (UsageError otherwise): its
    quality map and region-of-interest mask (``roi``, default ``args.roi``) read and checked
    too."""
    roi = args.roi if roi is None else roi
    try:
        return Target.parse(
            quality=args.quality,
            lmbda=args.lmbda,
            bpp=args.bpp,
            size=args.size,
            psnr=args.psnr,
            total_size=args.total_size,
            quality_map=None
            if args.quality_map is None
            else read_gray(args.quality_map, "quality map"),
            roi=None if roi is None else read_gray(roi, "ROI mask"),
            roi_boost=args.roi_boost,
            refine_steps=args.refine_steps,
        )
    except TargetError as err:
        raise UsageError(str(err)) from None


def _checkpoint_path(args: argparse.Namespace) -> Path:
    if args.checkpoint:
        return args.checkpoint
    return Path(str(importlib.resources.files("lae_vbr").joinpath("assets", "demo.pt")))


def precheck_rate(args: argparse.Namespace, target: Target) -> None:
    """Refuse a missing or superfluous rate option from what the checkpoint file records,
    without loading the model; files this cannot read are checked after loading."""
    from lae_vbr.codec.peek import peek_rate_axis

    path = _checkpoint_path(args)
    axis = peek_rate_axis(path, path.stem) if path.is_file() else None
    if axis is not None:
        _as_usage(axis.check_given, target.kind is not None)


def check_rate(codec: ImageCodec, target: Target) -> None:
    """The loaded model's own answer: a rate option exactly when it takes one, in range."""
    _as_usage(codec.rate_axis.check_given, target.kind is not None)
    if target.kind in ("quality", "lmbda"):
        _as_usage(lambda: codec.rate_index(quality=target.quality, lmbda=target.lmbda))


def _as_usage(check, *args) -> None:
    try:
        check(*args)
    except RateError as err:
        raise UsageError(str(err)) from err


def load_codec_for(args: argparse.Namespace, pixels: int) -> ImageCodec:
    """The model of ``args``, in a process set up to code images of at most ``pixels``
    (CompressAI without its subpackages this process never uses, freed memory kept)."""
    import_compressai_lean()  # before the first import of CompressAI: the models' imports
    import torch

    from lae_vbr.codec.image_codec import ImageCodec
    from lae_vbr.heap import keep_freed_memory_for
    from lae_vbr.models.state_dict import CheckpointError

    keep_freed_memory_for(pixels)  # the command codes and exits: freed maps are reused
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {args.device}: this machine has "
                         f"{torch.cuda.device_count()} GPU(s)")  # fmt: skip
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {args.device}: MPS is not available here; use --device cpu")
    try:
        return ImageCodec.load(args.checkpoint, device=None if device.type == "cpu" else device)
    except CheckpointError as err:
        raise UsageError(str(err)) from err
