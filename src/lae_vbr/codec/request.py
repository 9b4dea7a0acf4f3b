"""What to code an image to, parsed once, and the one function that codes an image to it.

:class:`Target` holds the user's rate option (a quality, a λ, a bit rate, a file size, a PSNR,
or a folder's total size, or a quality map), a region of interest coded above the rest, and the
refinement steps; :meth:`Target.parse` checks them without torch (a bad target fails before a
model loads). :func:`code_image` codes one image to a
target with a loaded codec: plainly, with refined latents, or by rate or quality control. The
command line (one file or a folder) and Python callers use the same two.

    target = Target.parse(bpp=0.4)
    coded = code_image(ImageCodec.load(), read_image("photo.png"), target)
    Path("photo.lae").write_bytes(coded.stream.to_bytes())
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lae_vbr.rate_axis import CONTROL_OPTIONS

from .regions import GrayImage, Region
from .targets import TargetError, parse_size

if TYPE_CHECKING:
    from torch import Tensor

    from .container import Bitstream, RateMap
    from .image_codec import ImageCodec
    from .rate_control import OnEncode
    from .refine import OnStep, RefineSchedule

__all__ = ["DEFAULT_ROI_BOOST", "Coded", "Target", "code_image"]

#: λ indices the region of interest is coded above the background, by default.
DEFAULT_ROI_BOOST = 2.0
#: The options that set the rate, one at most (a quality map sets it block by block).
_RATE_FIELDS = ("quality", "lmbda", "bpp", "size", "psnr", "total_size", "quality_map")
#: The rate options a region of interest combines with (they set the background).
_ROI_RATES = ("quality", "lmbda", "bpp", "size")


@dataclass(frozen=True)
class Target:
    """At most one rate option, a region of interest (``roi``, coded ``roi_boost`` λ indices
    above the background that the rate option sets) and the refinement steps (0: none). No
    option at all is a fixed-rate model's only rate (a variable-rate model then refuses it)."""

    quality: float | None = None
    lmbda: float | None = None
    bpp: float | None = None
    size: int | None = None
    psnr: float | None = None
    total_size: int | None = None
    quality_map: GrayImage | None = None
    roi: GrayImage | None = None
    roi_boost: float = DEFAULT_ROI_BOOST
    refine_steps: int = 0

    @classmethod
    def parse(
        cls,
        *,
        quality: float | None = None,
        lmbda: float | None = None,
        bpp: float | None = None,
        size: int | str | None = None,
        psnr: float | None = None,
        total_size: int | str | None = None,
        quality_map: GrayImage | None = None,
        roi: GrayImage | None = None,
        roi_boost: float | None = None,
        refine_steps: int = 0,
    ) -> Target:
        """The target of these options; TargetError for numbers that are not positive, sizes
        that do not parse, two rate options, refinement with ``psnr`` / ``total_size`` or a
        region, and a region without a rate option it combines with, or with an empty mask."""
        given = {
            "quality": quality, "lmbda": lmbda, "bpp": bpp, "size": size, "psnr": psnr,
            "total_size": total_size, "quality_map": quality_map,
        }  # fmt: skip
        named = [_option(name) for name, value in given.items() if value is not None]
        if len(named) > 1:
            raise TargetError(f"give one rate option, not {' and '.join(named)}")
        for name, unit in (("bpp", "bits per pixel"), ("psnr", "dB")):
            value = given[name]
            if value is not None and not (math.isfinite(value) and value > 0):
                raise TargetError(
                    f"{_option(name)} must be a positive number of {unit}, got {value:g}"
                )
        for name in ("size", "total_size"):
            if given[name] is not None:
                try:
                    given[name] = parse_size(given[name])
                except TargetError as err:
                    raise TargetError(f"{_option(name)}: {err}") from None
        if refine_steps < 0:
            raise TargetError(f"--refine-steps must be 0 or more, got {refine_steps}")
        if refine_steps and (psnr is not None or total_size is not None):
            raise TargetError(
                "--refine-steps works with --quality, --lmbda, --bpp and --size, "
                "not with --psnr or --total-size"
            )
        boost = _check_region(roi, roi_boost, named, refine_steps)
        if refine_steps and quality_map is not None:
            raise TargetError("--refine-steps does not take a quality map; drop one of them")
        return cls(**given, roi=roi, roi_boost=boost, refine_steps=refine_steps)  # type: ignore[arg-type]

    @property
    def kind(self) -> str | None:
        """The rate option given (``"quality"``, ``"bpp"``, …, ``"quality_map"``), None for
        none."""
        return next((name for name in _RATE_FIELDS if getattr(self, name) is not None), None)

    @property
    def controlled(self) -> bool:
        """Whether rate or quality control finds the λ index (a bit rate, size or PSNR)."""
        return self.kind in CONTROL_OPTIONS


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _check_region(
    roi: GrayImage | None, boost: float | None, named: list[str], refine_steps: int
) -> float:
    """The ROI boost, after checking that a region comes with what it needs."""
    if roi is None:
        if boost is not None:
            raise TargetError("--roi-boost needs --roi MASK")
        return DEFAULT_ROI_BOOST
    boost = DEFAULT_ROI_BOOST if boost is None else boost
    if not (math.isfinite(boost) and boost > 0):
        raise TargetError(f"--roi-boost must be a positive number of λ indices, got {boost:g}")
    allowed = [_option(name) for name in _ROI_RATES]
    if not named or named[0] not in allowed:
        with_what = f"not with {named[0]}" if named else "one is missing"
        raise TargetError(
            f"--roi sets the region above a background rate: give it {', '.join(allowed)} "
            f"({with_what})"
        )
    if refine_steps:
        raise TargetError("--refine-steps does not take a region of interest; drop one of them")
    if not roi.has_region:
        raise TargetError(f"the ROI mask {roi.name} is empty (no nonzero pixel)")
    return float(boost)


@dataclass(frozen=True)
class Coded:
    """One image's file and what the command line says about how it was found."""

    stream: Bitstream
    note: str = ""


def code_image(
    codec: ImageCodec,
    x: Tensor,
    target: Target,
    on_encode: OnEncode | None = None,
    on_step: OnStep | None = None,
) -> Coded:
    """Code one image, (1, 3, H, W) or (3, H, W) in [0, 1], to ``target``: at its quality or
    λ, or by rate or quality control; refined when ``target.refine_steps``. Raises RateError
    for a rate option the model cannot take; a bit rate, size or PSNR out of reach is coded at
    the nearest end with a :class:`~.rate_control.RateControlWarning` (or QualityWarning)."""
    codec.rate_axis.check_given(target.kind is not None)
    if target.total_size is not None:
        raise TargetError("a total size is for a set of images (encode_set_to_size)")
    refine = None
    if target.refine_steps:
        from .refine import RefineSchedule

        refine = RefineSchedule(steps=target.refine_steps)
    if target.psnr is not None:
        return _to_psnr(codec, x, target.psnr)
    if target.quality_map is not None or target.roi is not None:
        return _with_region(codec, x, target, on_encode)
    if target.controlled:
        return _to_rate(codec, x, target, refine, on_encode, on_step if refine else None)
    lmbda_idx = codec.rate_index(quality=target.quality, lmbda=target.lmbda)
    if refine is not None:
        from .refine import refine_encode

        return Coded(refine_encode(codec, x, lmbda_idx, refine, on_step=on_step)[0])
    return Coded(codec.encode(x, lmbda_idx))


def _with_region(codec: ImageCodec, x: Tensor, target: Target, on_encode: OnEncode | None) -> Coded:
    """A quality map, or a region of interest above a background set by quality, λ, bit rate
    or size (:mod:`.regions`)."""
    from .regions import RoiRegion, quality_map_levels

    size = (int(x.shape[-2]), int(x.shape[-1]))
    grid = codec.latent_shape(*size)
    top = codec.max_index
    if target.quality_map is not None:
        codec.rate_axis.require_variable("a quality map")
        base, rate_map = quality_map_levels(target.quality_map, size, grid, top)
        return Coded(codec.encode(x, base, rate_map), _region_note(rate_map, base))
    assert target.roi is not None
    region = RoiRegion.of(target.roi, size, grid, target.roi_boost, top)
    if target.controlled:
        coded = _to_rate(codec, x, target, None, on_encode, None, region)
        stream = coded.stream
        return Coded(stream, _region_note(stream.rate_map, stream.lmbda_idx) + coded.note)
    base = codec.rate_index(quality=target.quality, lmbda=target.lmbda)
    rate_map = region(base)  # type: ignore[arg-type]
    return Coded(codec.encode(x, base, rate_map), _region_note(rate_map, base))


def _region_note(rate_map: RateMap | None, base: float | None) -> str:
    """How the summary line describes the map: its range and the share above the base."""
    if rate_map is None or base is None:
        return ""
    top = base + rate_map.highest_offset
    return f", quality map {base:g}–{top:g} ({rate_map.roi_share:.0%} above {base:g})"


def _to_psnr(codec: ImageCodec, x: Tensor, psnr: float) -> Coded:
    from .quality_control import encode_to_psnr

    quality = encode_to_psnr(codec, x, psnr)
    about = "" if quality.measured else "about "
    rounds = count_of(len(quality.rounds), "reconstruction")
    note = f", {about}{quality.psnr:.2f} dB (target {psnr:g} dB, {rounds}, 1 encode)"
    return Coded(quality.stream, note)  # type: ignore[arg-type]


def _to_rate(
    codec: ImageCodec,
    x: Tensor,
    target: Target,
    refine: RefineSchedule | None,
    on_encode: OnEncode | None,
    on_step: OnStep | None,
    region: Region | None = None,
) -> Coded:
    from .rate_control import encode_to_bpp, encode_to_size

    options = {"refine": refine, "on_encode": on_encode, "on_step": on_step, "region": region}
    if target.size is not None:
        result = encode_to_size(codec, x, target.size, **options)  # type: ignore[arg-type]
        note = f" (at most {target.size} bytes, {count_of(result.encodes, 'encode')})"
    else:
        result = encode_to_bpp(codec, x, target.bpp, **options)  # type: ignore[arg-type]
        note = f" (target {target.bpp:g} bpp, {count_of(result.encodes, 'encode')})"
    return Coded(result.stream, note)  # type: ignore[arg-type]


def count_of(n: int, thing: str) -> str:
    """``"1 encode"``, ``"3 encodes"``."""
    return f"{n} {thing}{'' if n == 1 else 's'}"
