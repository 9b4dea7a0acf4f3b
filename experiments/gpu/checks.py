"""The GPU checks of the open issues, as one measurement: ``experiments/gpu/run.sh`` runs it.

    python experiments/gpu/checks.py --device cuda --out DIR      # on the device machine
    python experiments/gpu/checks.py --device cpu --out DIR --tiny  # the dry run

Writes ``DIR/gpu_checks.json``:

* ``device``: the card (``torch.cuda.get_device_name``), torch and CUDA versions;
* ``training``: images/s of a training step (forward, RD loss, backward, Adam) of TCM-S-VBR
  (the paper's model, 256² crops, batch 8) in float32 and under bf16 autocast with
  channels-last transforms, and of the claims study's small mean-scale hyperprior (128², batch
  8): the rate that estimates the paper-scale study's GPU time (``experiments/claims``);
* ``coding``: compress and decompress time of TCM-VBR N=64 on a 768×512 image, networks on the
  device (entropy coding on the CPU);
* ``cross_device``: files of the bundled model encoded with the networks on the CPU and decoded
  on the device, and the reverse (one file in five with a region-of-interest quality map); every
  decode checks the coded symbols (a mismatch is an error), and the largest pixel difference
  against the same-device decode is kept.

The images are scikit-image's bundled photos (nothing is read from outside the repository).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skimage import data as skdata

from lae_vbr.codec.container import Bitstream, RateMap
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.regions import GrayImage, RoiRegion
from lae_vbr.errors import LaeVbrError
from lae_vbr.losses import RateDistortionLoss
from lae_vbr.models import TCMVBR, CompressAIBackbone, VariableRateCodec
from lae_vbr.models.registry import PAPER_MSE_LMBDAS

#: The dry run's TCM: conf/model/backbone/tcm_tiny.yaml's arguments.
TINY_TCM = {"N": 16, "M": 64, "num_slices": 4, "max_support_slices": 4, "hyper_channels": 32,
            "head_dims": [8] * 6, "hyper_head_dim": 16, "atten_dim": 32, "atten_head_dim": 16,
            "slice_hidden": [48, 32]}  # fmt: skip
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")


def _sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _photos(size: int, count: int) -> list[torch.Tensor]:
    """``count`` crops of ``size``² from scikit-image's photos, (1, 3, H, W) in [0, 1]."""
    crops = []
    for i in range(count):
        img = np.asarray(getattr(skdata, PHOTOS[i % len(PHOTOS)])())[..., :3]
        step = max(1, (img.shape[0] - size) // 4)
        top = (i // len(PHOTOS)) * step % max(1, img.shape[0] - size + 1)
        crop = img[top : top + size, :size]
        crops.append(torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 255)
    return crops


def training_rate(
    model: torch.nn.Module, device: torch.device, crop: int, steps: int, bf16: bool
) -> float:
    """Images/s of training steps (batch 8) after two warm-up steps."""
    model = model.to(device).train()
    if bf16:
        model.transforms_to_channels_last()
    loss_fn = RateDistortionLoss(PAPER_MSE_LMBDAS).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(8, 3, crop, crop, device=device)
    sync, began = _sync(device), 0.0
    for step in range(steps + 2):
        if step == 2:
            sync()
            began = time.perf_counter()
        lmbda = loss_fn.sample_indices(8)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            out = model(x, lmbda)
        loss = loss_fn({**out, "x_hat": out["x_hat"].float()}, x, lmbda)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    return 8 * steps / (time.perf_counter() - began)


def coding_times(
    device: torch.device, size: tuple[int, int], repeats: int, tcm: dict
) -> dict[str, float]:
    torch.manual_seed(0)
    model = TCMVBR(**tcm).eval().to(device)
    model.update()
    x = torch.rand(1, 3, *size, device=device)
    sync, times = _sync(device), {"compress_s": [], "decompress_s": []}
    with torch.inference_mode():
        for _ in range(repeats + 1):
            sync()
            began = time.perf_counter()
            out = model.compress(x, 3.0)
            sync()
            mid = time.perf_counter()
            model.decompress(out["strings"], out["shape"], 3.0)
            sync()
            times["compress_s"].append(mid - began)
            times["decompress_s"].append(time.perf_counter() - mid)
    return {k: float(np.median(v[1:])) for k, v in times.items()}


def _box(codec: ImageCodec, x: torch.Tensor) -> RateMap:
    """A centred-box region 2 λ indices above index 1 (a version 3 file with a quality map)."""
    height, width = x.shape[-2:]
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = 255
    grid = codec.latent_shape(height, width)
    return RoiRegion.of(GrayImage(mask, "box"), (height, width), grid, 2.0, codec.max_index)(1.0)


def cross_device(device: torch.device, count: int, size: int) -> dict[str, object]:
    """Files encoded on one side, decoded on the other, symbols checked; see the module (one
    file in five carries a region-of-interest quality map)."""
    cpu = ImageCodec.load(None)
    other = ImageCodec.load(None, device=device)
    indices = np.linspace(0, cpu.rate_axis.max_index, 4)
    result = {}
    for name, (enc, dec) in {"cpu_to_device": (cpu, other), "device_to_cpu": (other, cpu)}.items():
        ok = failed = 0
        worst = 0.0
        for x in _photos(size, count // (len(indices) + 1)):
            for idx, rate_map in [*((float(i), None) for i in indices), (1.0, _box(enc, x))]:
                data = enc.encode(x, idx, rate_map).to_bytes()
                stream = Bitstream.from_bytes(data)
                try:
                    across = dec.decode(stream).cpu()
                except LaeVbrError:
                    failed += 1
                    continue
                same = enc.decode(stream).cpu()
                worst = max(worst, float((across - same).abs().max() * 255))
                ok += 1
        result[name] = {"files": ok + failed, "decoded": ok, "symbol_mismatches": failed,
                        "max_pixel_difference_levels": worst}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="the dry run: small sizes, few steps")
    args = parser.parse_args()
    device = torch.device(args.device)
    tiny = args.tiny
    cpu = platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    record: dict[str, object] = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dry_run": tiny,
    }
    steps = 2 if tiny else 20
    small = VariableRateCodec(CompressAIBackbone("mbt2018-mean", N=64, M=128), num_lmbdas=6)
    crop, bf16 = 64 if tiny else 256, device.type == "cuda"
    tcm = TINY_TCM if tiny else {"N": 64}
    record["training_images_per_s"] = {
        "tcm_s_vbr_256_fp32": training_rate(TCMVBR(**tcm), device, crop, steps, False),
        "tcm_s_vbr_256_bf16_channels_last": training_rate(TCMVBR(**tcm), device, crop, steps, bf16),
        "mbt2018_mean_small_lae_128_fp32": training_rate(small, device, 128, steps, False),
    }
    size = (128, 128) if tiny else (512, 768)
    record["coding_768x512"] = coding_times(device, size, 1 if tiny else 3, tcm)
    record["cross_device"] = cross_device(device, 8 if tiny else 208, 64 if tiny else 256)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_checks.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
