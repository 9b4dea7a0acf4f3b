"""The commands: ``compress`` (one image; a folder goes to :mod:`.folder`), ``decompress`` and
``info``. torch and the model code are imported only by the commands that need them, so
``info`` is fast and works without loading a checkpoint, and a usage mistake is reported
before the model is loaded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lae_vbr.codec.container import Bitstream

from .session import check_rate, load_codec_for, precheck_rate, target_of
from .terminal import (
    OK,
    Progress,
    UsageError,
    check_input,
    check_output,
    display_name,
    is_stdio,
    read_stdin,
    read_stream,
    report,
    summary_line,
    warnings_to_stderr,
    write_output,
)

__all__ = ["compress", "decompress", "describe", "info"]


def compress(args: argparse.Namespace) -> int:
    """``lae-vbr compress IN OUT``: one image to one file, or a folder to a folder."""
    if not is_stdio(args.input) and args.input.is_dir():
        from .folder import compress_folder

        return compress_folder(args)
    check_input(args.input)
    check_output(args.output)
    if args.roi is not None and args.roi.is_dir():
        raise UsageError(f"--roi {args.roi} is a folder, which is for a folder of images; "
                         "give one mask file")  # fmt: skip
    target = target_of(args)
    if target.total_size is not None:
        raise UsageError("--total-size is for a folder of images; for one image use --size")
    precheck_rate(args, target)  # before torch is imported: a usage mistake costs no model load
    from lae_vbr.codec.images import read_image, read_image_bytes
    from lae_vbr.codec.request import code_image

    if is_stdio(args.input):  # a bad image fails before the model is loaded
        x = read_image_bytes(read_stdin(), "<stdin>")
    else:
        x = read_image(args.input)
    codec = load_codec_for(args, x.shape[-2] * x.shape[-1])
    check_rate(codec, target)
    with Progress() as progress, warnings_to_stderr(progress):
        coded = code_image(codec, x, target, progress.encode, progress.step)
    write_output(args.output, coded.stream.to_bytes())
    where = f"{display_name(args.input)} -> {display_name(args.output, '<stdout>')}"
    report(args.output, summary_line(where, coded.stream, target, coded.note))
    return OK


def decompress(args: argparse.Namespace) -> int:
    """``lae-vbr decompress IN OUT.png``."""
    check_input(args.input)
    check_output(args.output)
    if not is_stdio(args.output) and args.output.suffix.lower() != ".png":
        raise UsageError(f"the output is written as PNG; name it *.png, not {args.output.name}")
    stream = read_stream(args.input)  # a bad file fails before the model is loaded
    codec = load_codec_for(args, stream.height * stream.width)
    from lae_vbr.codec.images import png_bytes

    write_output(args.output, png_bytes(codec.decode(stream)))
    size = f"{stream.width}×{stream.height}"
    where = f"{display_name(args.input)} -> {display_name(args.output, '<stdout>')}"
    report(args.output, f"{where}: {size}")
    return OK


def info(args: argparse.Namespace) -> int:
    """``lae-vbr info IN [--json]``: the file's fields, no model needed."""
    check_input(args.input)
    stream = read_stream(args.input)
    if args.json:
        print(json.dumps({"file": display_name(args.input), **stream.describe()}, indent=2))
    else:
        print(describe(Path(display_name(args.input)), stream))
    return OK


def describe(path: Path, stream: Bitstream) -> str:
    """``info``'s table: one ``key: value`` row per field."""
    if stream.lmbda_idx is None:
        rate = "fixed-rate model"
    elif stream.rate_map is not None:
        described = stream.describe()["quality_map"]
        rate = (
            f"quality map {described['rows']}×{described['cols']}, λ index "
            f"{described['lowest_idx']:.6g}–{described['highest_idx']:.6g}, "
            f"{described['roi_share']:.1%} above the lowest (variable-rate model)"
        )
    else:
        rate = f"λ index {stream.lmbda_idx:.6g} (variable-rate model)"
    checks = "checksummed" if stream.checked else "no checksums"
    rows = [
        ("file", f"{path} ({stream.num_bytes} bytes, format version {stream.version})"),
        ("model", f"{stream.model.name} (weights {stream.model.digest.hex()})"),
        ("rate", rate),
        ("image", f"{stream.width}×{stream.height} (width×height)"),
        ("bpp", f"{stream.bpp:.4f}"),
        ("coding", f"{stream.arithmetic} entropy parameters, {checks}"),
        ("bytes", _byte_counts(stream)),
    ]
    return "\n".join(f"{key + ':':<7} {value}" for key, value in rows)


def _byte_counts(stream: Bitstream) -> str:
    quality_map = f", map {len(stream.map_bytes)}" if stream.rate_map is not None else ""
    return (
        f"header {stream.overhead}{quality_map}, z {len(stream.z_string)}, y {len(stream.y_string)}"
    )
