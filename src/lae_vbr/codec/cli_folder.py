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

from .cli import (
    OK,
    UsageError,
    _check_targets,
    _choose_rate,
    _count_of,
    _encode,
    _is_stdio,
    _load,
    _precheck_rate,
    _Progress,
    _report,
    _summary,
    _warnings_to_stderr,
)

if TYPE_CHECKING:
    from .image_codec import ImageCodec

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
    if _is_stdio(out_dir):
        raise UsageError("a folder of images is written to a folder, not to stdout")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"the input is a folder, so the output must be one: {out_dir} is a file")
    if not out_dir.parent.is_dir():
        raise UsageError(f"output folder's parent does not exist: {out_dir.parent}")


def compress_folder(args: argparse.Namespace) -> int:
    """Code every image of ``args.input`` into the folder ``args.output``."""
    images = folder_images(args.input)
    _check_out_dir(args.output)
    _check_targets(args)
    _precheck_rate(args)
    outputs = _outputs(images, args.output)
    from .images import image_pixels, read_image

    codec = _load(args, max(image_pixels(path) for path in images))
    lmbda_idx = _choose_rate(codec, args)
    args.output.mkdir(exist_ok=True)
    if args.total_size is not None:
        return _total_size(codec, images, outputs, args)
    total_bytes = total_pixels = 0
    with _Progress() as progress:
        for path in images:
            x = read_image(path)
            stream, note = _encode(codec, x, lmbda_idx, args, progress, f"{path}: ")
            outputs[path].write_bytes(stream.to_bytes())
            _report(args, _summary(f"{path} -> {outputs[path]}", stream, args, note))
            total_bytes += stream.num_bytes
            total_pixels += stream.width * stream.height
    _report(args, f"total: {len(images)} files, {total_bytes} bytes, "
                  f"{8 * total_bytes / total_pixels:.4f} bpp")  # fmt: skip
    return OK


def _total_size(
    codec: ImageCodec, images: list[Path], outputs: dict[Path, Path], args: argparse.Namespace
) -> int:
    """All images at one λ index, the files together within ``args.total_size`` bytes."""
    from .images import read_image
    from .rate_control import encode_set_to_size

    pictures = [read_image(path) for path in images]
    with _Progress() as progress, _warnings_to_stderr(progress):
        result = encode_set_to_size(codec, pictures, args.total_size, on_encode=progress.encode)
    streams = result.stream.streams  # type: ignore[union-attr]
    for path, stream in zip(images, streams, strict=True):
        outputs[path].write_bytes(stream.to_bytes())
        _report(args, _summary(f"{path} -> {outputs[path]}", stream, args, ""))
    _report(
        args,
        f"total: {len(images)} files, {result.num_bytes} bytes (at most {args.total_size}), "
        f"{result.bpp:.4f} bpp, λ index {result.lmbda_idx:g} for every image "
        f"({_count_of(result.encodes, 'encode')} of the set)",
    )
    return OK
