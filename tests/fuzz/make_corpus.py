"""Write the seed corpus's files of the current format versions with the bundled model.

    python tests/fuzz/make_corpus.py [FOLDER]        # default: tests/fuzz/corpus

The corpus holds real files of every format version (``v1_*``: the first bundled model's,
kept as they are; ``v2_*``: one λ index per image; ``v3_*``: a quality map or a region of
interest). A file names the model that wrote it, and the decoder refuses a file of another
model, so the ``v2_*`` and ``v3_*`` files are written again whenever the bundled model changes.
The images are synthetic (a ramp with seeded noise), so the files are the same on every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.regions import GrayImage
from lae_vbr.codec.request import Target, code_image
from lae_vbr.data.tensors import tensor_to_uint8
from lae_vbr.studies.roi import roi_masks

#: (height, width, λ index) of the one-rate files.
UNIFORM = ((16, 16, 0.0), (1, 1, 1.0), (24, 40, 2.5), (48, 32, 5.0))


def noisy_ramp(height: int, width: int, seed: int) -> torch.Tensor:
    """A (1, 3, height, width) image in [0, 1]: a diagonal ramp per channel plus noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / max(height + width - 2, 1)
    ramp = np.stack([ys + xs, 1 - xs, ys])[None] * 0.8 + 0.1
    noisy = ramp + rng.normal(0, 0.05, ramp.shape)
    return torch.from_numpy(np.clip(noisy, 0, 1).astype(np.float32))


def centred_box(image: torch.Tensor) -> GrayImage:
    """The ROI study's centred box of ``image`` (:func:`~lae_vbr.studies.roi.roi_masks`)."""
    box = roi_masks(tensor_to_uint8(image))["box"]
    return GrayImage(box.astype(np.uint8) * 255, "centred box")


def left_to_right(height: int, width: int) -> GrayImage:
    """A quality map rising from 0 on the left to 255 on the right."""
    row = np.linspace(0, 255, width).round().astype(np.uint8)
    return GrayImage(np.tile(row, (height, 1)), "left-to-right ramp")


def write_corpus(codec: ImageCodec, folder: Path) -> list[Path]:
    """Write the ``v2_*`` and ``v3_*`` seed files; returns their paths."""
    cases = [
        (f"v2_{h}x{w}_q{idx:g}.lae", noisy_ramp(h, w, seed), Target.parse(quality=idx))
        for seed, (h, w, idx) in enumerate(UNIFORM)
    ]
    for (h, w), seed in (((16, 16), 10), ((48, 32), 11)):
        image = noisy_ramp(h, w, seed)
        target = Target.parse(quality=1.0, roi=centred_box(image))
        cases.append((f"v3_{h}x{w}_roi.lae", image, target))
    map_target = Target.parse(quality_map=left_to_right(40, 72))
    cases.append(("v3_40x72_map.lae", noisy_ramp(40, 72, 12), map_target))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image, target in cases:
        stream = code_image(codec, image, target).stream
        assert stream.version == int(name[1]), (name, stream.version)
        path = folder / name
        path.write_bytes(stream.to_bytes())
        written.append(path)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "corpus"
    for path in write_corpus(ImageCodec.load(None), out):
        print(f"{path}: {path.stat().st_size} bytes")
