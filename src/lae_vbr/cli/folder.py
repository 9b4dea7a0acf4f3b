"""``lae-vbr compress DIR OUTDIR``: every image of a folder, to ``OUTDIR/NAME.lae``.

Each image gets the rate option as given (``--quality``, ``--lmbda``, ``--bpp``, ``--size``,
``--psnr``: per image), or ``--total-size`` puts the whole set within one byte budget at one
λ index (the same rate-distortion slope for every image, the allocation that minimises the
total distortion for the total size). Images are the folder's PNG, JPEG, WebP and PPM files
(not its subfolders), in name order; a line per file and a total are printed. The checks
that need no model (targets, names, the output folder) run before it is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lae_vbr.codec.request import Target, count_of

from .session import check_rate, load_codec_for, precheck_rate, target_of
from .terminal import (
    OK,
    Progress,
    UsageError,
    is_stdio,
    report,
    summary_line,
    warnings_to_stderr,
)

if TYPE_CHECKING:
    from lae_vbr.codec.image_codec import ImageCodec

__all__ = ["IMAGE_SUFFIXES", "compress_folder", "folder_images"]

#: File name suffixes taken as images in a folder (the formats ``read_image`` accepts).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})


def folder_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` in name order; UsageError when there are none."""
    images = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise UsageError(f"no images (PNG, JPEG, WebP, PPM) in folder {folder}")
    return images


def _outputs(images: list[Path], out_dir: Path) -> dict[Path, Path]:
    """``OUTDIR/NAME.lae`` for each image; UsageError when two images share a name."""
    outputs: dict[Path, Path] = {}
    seen: dict[str, Path] = {}
    for path in images:
        if path.stem in seen:
            raise UsageError(
                f"{seen[path.stem].name} and {path.name} would both be written to "
                f"{path.stem}.lae; rename one"
            )
        seen[path.stem] = path
        outputs[path] = out_dir / f"{path.stem}.lae"
    return outputs


def _check_out_dir(out_dir: Path) -> None:
    if is_stdio(out_dir):
        raise UsageError("a folder of images is written to a folder, not to stdout")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"the input is a folder, so the output must be one: {out_dir} is a file")
    if not out_dir.parent.is_dir():
        raise UsageError(f"output folder's parent does not exist: {out_dir.parent}")


def _masks(roi: Path | None, images: list[Path]) -> dict[Path, Path | None]:
    """Each image's ROI mask: ``roi`` itself (one mask for all), or in a folder of masks the
    image file's namesake (any image suffix); UsageError when an image has none."""
    if roi is None or not roi.is_dir():
        return dict.fromkeys(images, roi)
    by_stem: dict[str, Path] = {}
    for mask in sorted(roi.iterdir()):
        if mask.is_file() and mask.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(mask.stem, mask)
    missing = [path.name for path in images if path.stem not in by_stem]
    if missing:
        raise UsageError(
            f"no ROI mask in {roi} for {missing[0]}"
            + (f" and {len(missing) - 1} more image(s)" if len(missing) > 1 else "")
            + " (one mask per image, named as the image)"
        )
    return {path: by_stem[path.stem] for path in images}


def compress_folder(args: argparse.Namespace) -> int:
    """Code every image of ``args.input`` into the folder ``args.output``."""
    images = folder_images(args.input)
    _check_out_dir(args.output)
    masks = _masks(args.roi, images)
    target = target_of(args, masks[images[0]])
    for mask in dict.fromkeys(masks.values()):  # every mask checked before the model
        if mask != masks[images[0]]:
            target_of(args, mask)
    precheck_rate(args, target)
    outputs = _outputs(images, args.output)
    from lae_vbr.codec.images import image_pixels, read_image
    from lae_vbr.codec.request import code_image

    codec = load_codec_for(args, max(image_pixels(path) for path in images))
    check_rate(codec, target)
    args.output.mkdir(exist_ok=True)
    if target.total_size is not None:
        return _total_size(codec, images, outputs, args, target)
    total_bytes = total_pixels = 0
    with Progress() as progress:
        for path in images:
            same = masks[path] == masks[images[0]]  # one mask for all: read once
            image_target = target if same else target_of(args, masks[path])
            with warnings_to_stderr(progress, f"{path}: "):
                coded = code_image(codec, read_image(path), image_target, progress.encode,
                                   progress.step)  # fmt: skip
            coded.stream.write(outputs[path])
            where = f"{path} -> {outputs[path]}"
            report(args.output, summary_line(where, coded.stream, target, coded.note))
            total_bytes += coded.stream.num_bytes
            total_pixels += coded.stream.width * coded.stream.height
    report(args.output, f"total: {len(images)} files, {total_bytes} bytes, "
                        f"{8 * total_bytes / total_pixels:.4f} bpp")  # fmt: skip
    return OK


def _total_size(
    codec: ImageCodec,
    images: list[Path],
    outputs: dict[Path, Path],
    args: argparse.Namespace,
    target: Target,
) -> int:
    """All images at one λ index, the files together within the total size."""
    from lae_vbr.codec.images import read_image
    from lae_vbr.codec.rate_control import encode_set_to_size

    pictures = [read_image(path) for path in images]
    with Progress() as progress, warnings_to_stderr(progress):
        result = encode_set_to_size(codec, pictures, target.total_size, on_encode=progress.encode)
    streams = result.stream.streams  # type: ignore[union-attr]
    for path, stream in zip(images, streams, strict=True):
        stream.write(outputs[path])
        report(args.output, summary_line(f"{path} -> {outputs[path]}", stream, target, ""))
    report(
        args.output,
        f"total: {len(images)} files, {result.num_bytes} bytes (at most {target.total_size}), "
        f"{result.bpp:.4f} bpp, λ index {result.lmbda_idx:g} for every image "
        f"({count_of(result.encodes, 'encode')} of the set)",
    )
    return OK
