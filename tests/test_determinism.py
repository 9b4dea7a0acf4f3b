"""Files decode to what was encoded on any thread count, and no file can break the decoder.

* Encoding and decoding run in separate processes with 1 and 2 threads; a decode succeeds
  only if the decoded symbols' CRC equals the encoder's, so success means identical symbols.
* A decoder whose arithmetic differs from the encoder's is caught by that checksum.
* Damaged files (``damage.py``), with and without a valid CRC, give exit code 0 or 1 and at
  most one line on stderr, within a bounded time; the bounds-checked rANS decoder turns
  overruns into errors.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from damage import KINDS, damaged_files
from helpers import randomize_lae, tiny_cfg, write_noisy_ramp
from lae_vbr.cli import main
from lae_vbr.codec.container import Bitstream
from lae_vbr.codec.errors import DecodeError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.errors import LaeVbrError
from lae_vbr.models.registry import save_codec_bundle

#: Runs in a fresh process: code every (image, λ index) or decode every file, with N threads.
_WORKER = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image, write_png
job = json.loads(sys.argv[3])
codec = ImageCodec.load(job["checkpoint"])
for item in job["items"]:
    if sys.argv[1] == "encode":
        codec.encode(read_image(item["image"]), item["lmbda_idx"]).write(item["file"])
    else:
        write_png(codec.decode(read_bitstream(item["file"])), item["png"])
"""


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("determinism")
    torch.manual_seed(0)
    cfg = tiny_cfg()
    vbr = instantiate(cfg["model"])
    with torch.no_grad():
        vbr.g_a[-1].weight.mul_(8)  # latents of several quantisation steps: real entropy
    randomize_lae(vbr.modnet_ga, 0.5, seed=1)
    randomize_lae(vbr.modnet_gs, 0.5, seed=2)
    files = {"checkpoint": save_codec_bundle(root / "vbr.pt", vbr, cfg)}
    for i, (h, w) in enumerate([(48, 70), (64, 64), (37, 129)]):
        files[f"image{i}"] = write_noisy_ramp(root / f"img{i}.png", h, w, noise=25, seed=i)
    return files


def _run(role: str, threads: int, job: dict) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, role, str(threads), json.dumps(job)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_other_thread_counts_decode_the_same_symbols(model_files, tmp_path: Path) -> None:
    images = [model_files[k] for k in sorted(model_files) if k.startswith("image")]
    pixels = {}
    for enc, dec in ((1, 2), (2, 1)):
        items = [
            {"image": str(img), "lmbda_idx": idx, "file": str(tmp_path / f"{enc}_{i}_{idx}.lae"),
             "png": str(tmp_path / f"{enc}_{i}_{idx}.png")}
            for i, img in enumerate(images) for idx in (0.0, 5.0)
        ]  # fmt: skip
        job = {"checkpoint": str(model_files["checkpoint"]), "items": items}
        _run("encode", enc, job)
        _run("decode", dec, job)  # raises unless every symbols checksum matched
        for item in items:
            key = Path(item["png"]).name.split("_", 1)[1]
            pixels.setdefault(key, []).append(np.asarray(Image.open(item["png"])).astype(int))
    for a, b in pixels.values():  # same symbols; g_s in float32 may differ by ±1 level
        assert np.abs(a - b).max() <= 1


def test_checksum_catches_a_decoder_that_computes_differently(model_files) -> None:
    codec = ImageCodec.load(model_files["checkpoint"])
    stream = codec.encode(read_image(model_files["image0"]), 2.5)
    assert stream.checked and stream.arithmetic == "float64"
    codec.decode(stream)
    with torch.no_grad():  # a decoder whose scale prediction differs: other CDF indexes
        codec.model.latent_codec.cc_scale_transforms[0][-1].bias.add_(0.5)
    with pytest.raises(DecodeError, match=r"checksum mismatch|damaged"):
        codec.decode(stream)


def test_damaged_files_never_crash_or_hang(model_files, tmp_path: Path, capsys) -> None:
    codec = ImageCodec.load(model_files["checkpoint"])
    data = codec.encode(read_image(model_files["image0"]), 2.5).to_bytes()
    other = codec.encode(read_image(model_files["image1"]), 1.0).to_bytes()
    start = time.perf_counter()
    codec.decode(Bitstream.from_bytes(data))
    clean = time.perf_counter() - start
    outcomes: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
    cases = damaged_files(data, other, random.Random(2024))
    for _ in range(300):
        kind, bad = next(cases)
        start = time.perf_counter()
        try:
            codec.decode(Bitstream.from_bytes(bad))
            outcome = "decoded"
        except LaeVbrError:  # ContainerError, DecodeError: a one-line message for the CLI
            outcome = "refused"
        assert time.perf_counter() - start < 10 * clean + 0.5, kind
        outcomes[kind][outcome] = outcomes[kind].get(outcome, 0) + 1
    # damage behind a valid CRC reaches the decoder, which must catch nearly all of it
    payload = outcomes["payload_crc"]
    assert payload.get("refused", 0) >= 0.9 * sum(payload.values()), outcomes
    assert outcomes["bit_flips"] == {"refused": 50} == outcomes["truncate"], outcomes
    # and through the command line: exit code 1, one line, no traceback
    path, png = tmp_path / "bad.lae", tmp_path / "bad.png"
    args = ["--checkpoint", str(model_files["checkpoint"])]
    for kind, bad in (next(cases) for _ in range(12)):
        path.write_bytes(bad)
        code = main(["decompress", str(path), str(png), *args])
        err = capsys.readouterr().err
        assert code in (0, 1) and "Traceback" not in err, (kind, err)
        assert err.count("\n") == (code == 1) and (code == 0 or err.startswith("lae-vbr: error:"))
