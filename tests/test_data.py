"""Image reading, folder listing, the data module and its Hydra configs."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from helpers import require_shared
from lae_vbr.config import register_resolvers
from lae_vbr.data import (
    SAMPLE_SPLITS,
    DataError,
    DataWarning,
    ImageDataModule,
    ImageDataset,
    datamodule,
    list_images,
    load_rgb_image,
    random_crop,
    sample_images,
)
from lae_vbr.paths import REPO_ROOT

RNG = np.random.default_rng(0)


def _round257(values: np.ndarray) -> np.ndarray:
    """The expected 16 -> 8 bit mapping, round(v / 257), in exact integer arithmetic."""
    return ((values.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)


def _write_png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit PNG (Pillow cannot write 16-bit RGB): grey, grey+alpha, RGB or RGBA by channels."""
    arr = arr if arr.ndim == 3 else arr[:, :, None]
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = arr.astype(">u2").reshape(h, w * c).tobytes()
    stride = w * c * 2
    data = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )
    return path


def _save(im: Image.Image, path: Path, **kwargs) -> Path:
    im.save(path, **kwargs)
    return path


def _rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _folder(tmp_path: Path, sizes: list[tuple[int, int]], name: str = "imgs") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(_rgb(h, w)).save(folder / f"{i:02d}.png")
    return folder


# -- conversions ------------------------------------------------------------------------------
def test_rgb_roundtrip_and_format_by_content(tmp_path: Path) -> None:
    pixels = _rgb(7, 9)
    _save(Image.fromarray(pixels), tmp_path / "no_extension", format="PNG")
    _save(Image.fromarray(pixels), tmp_path / "b.bmp")
    _save(Image.fromarray(pixels), tmp_path / "c.ppm")
    _save(Image.fromarray(pixels), tmp_path / "d.webp", lossless=True)
    files = list_images(tmp_path)
    assert [f.name for f in files] == ["b.bmp", "c.ppm", "d.webp", "no_extension"]
    for f in files:
        out = load_rgb_image(f)
        assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
        np.testing.assert_array_equal(out, pixels)


def test_grey_and_alpha_modes(tmp_path: Path) -> None:
    grey = np.array([[0, 100, 255]], dtype=np.uint8)
    out = load_rgb_image(_save(Image.fromarray(grey), tmp_path / "l.png"))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))

    alpha = np.array([[0, 128, 255]], dtype=np.uint8)
    la = Image.merge("LA", [Image.fromarray(np.full_like(grey, 100)), Image.fromarray(alpha)])
    out = load_rgb_image(_save(la, tmp_path / "la.png"))
    a = alpha / 255
    expected = np.rint(100 * a + 255 * (1 - a)).astype(np.uint8)  # composited onto white
    np.testing.assert_array_equal(out[..., 0], expected)
    assert (out == out[..., :1]).all()

    rgba = np.dstack([_rgb(1, 3), alpha])
    out = load_rgb_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 2], rgba[0, 2, :3])

    bits = Image.fromarray(np.array([[0, 1]], dtype=bool))
    out = load_rgb_image(_save(bits, tmp_path / "one.bmp"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 255])


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    im = Image.fromarray(_rgb(4, 4)).quantize(colors=4)
    out = load_rgb_image(_save(im, tmp_path / "p.png"))
    np.testing.assert_array_equal(out, np.asarray(im.convert("RGB")))

    index = np.asarray(im)[0, 0]
    out = load_rgb_image(_save(im, tmp_path / "pt.png", transparency=int(index)))
    transparent = np.asarray(im) == index
    assert (out[transparent] == 255).all()
    np.testing.assert_array_equal(out[~transparent], np.asarray(im.convert("RGB"))[~transparent])


def test_cmyk_and_jpeg(tmp_path: Path) -> None:
    cmyk = Image.fromarray(_rgb(5, 6)).convert("CMYK")
    out = load_rgb_image(_save(cmyk, tmp_path / "cmyk.tif"))
    np.testing.assert_array_equal(out, np.asarray(cmyk.convert("RGB")))
    path = _save(cmyk, tmp_path / "cmyk.jpg")
    with Image.open(path) as im:
        assert im.mode == "CMYK"
        np.testing.assert_array_equal(load_rgb_image(path), np.asarray(im.convert("RGB")))


def test_16bit_grey_uses_every_value(tmp_path: Path) -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = _write_png16(tmp_path / "g16.png", values)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    out = load_rgb_image(path)
    np.testing.assert_array_equal(out[..., 1], _round257(values))
    assert (
        out[-1, -1, 0] == 255 and out[0, 1, 0] == 0 and out[0, 129, 0] == 1
    )  # scaled, not clipped


def test_16bit_rgb_png_and_tiff_keep_the_low_byte(tmp_path: Path) -> None:
    # High bytes alone (what Pillow returns) would give 3, 116 and 255 for the second pixel.
    rgb = np.array([[[0, 32896, 65535], [1000, 29950, 65407]]], dtype=np.uint16)
    expected = _round257(rgb)
    np.testing.assert_array_equal(expected[0, 1], [4, 117, 255])
    paths = [_write_png16(tmp_path / "rgb16.png", rgb), tmp_path / "raw.tif", tmp_path / "z.tif"]
    tifffile.imwrite(paths[1], rgb, photometric="rgb")
    tifffile.imwrite(paths[2], rgb, photometric="rgb", compression="zlib")
    for path in paths:
        np.testing.assert_array_equal(load_rgb_image(path), expected, err_msg=path.name)

    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 65535, np.uint16)])
    out = load_rgb_image(_write_png16(tmp_path / "rgba16.png", opaque))
    np.testing.assert_array_equal(out, expected)


def test_16bit_grey_alpha(tmp_path: Path) -> None:
    la = np.array([[[1000, 65535], [51400, 0], [60000, 32768]]], dtype=np.uint16)
    out = load_rgb_image(_write_png16(tmp_path / "la16.png", la))
    a = la[..., 1] / 65535
    expected = np.rint((la[..., 0] / 65535 * a + 1 - a) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 2], expected)
    np.testing.assert_array_equal(expected[0, :2], [4, 255])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 7, 255]], np.int32), [0, 7, 255]),  # 8-bit range kept
        (np.array([[0, 1000, 65535, 70000]], np.int32), [0, 4, 255, 255]),  # 16-bit range
        (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255]),  # [0, 1]
        (np.array([[-3.0, 100.4, 300.0, np.nan]], np.float32), [0, 100, 255, 0]),  # [0, 255]
    ],
)
def test_32bit_int_and_float(tmp_path: Path, values: np.ndarray, expected: list[int]) -> None:
    im = Image.fromarray(values)
    assert im.mode in ("I", "F")
    out = load_rgb_image(_save(im, tmp_path / "x.tif"))
    np.testing.assert_array_equal(out[0, :, 0], expected)


# -- listing and robustness -------------------------------------------------------------------
def test_bad_files_skipped_with_one_warning(tmp_path: Path) -> None:
    good = _save(Image.fromarray(_rgb(20, 20)), tmp_path / "good.png")
    _save(Image.fromarray(_rgb(20, 20)), tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.png").write_text("not a png either")
    (tmp_path / "empty.jpg").write_bytes(b"")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _save(Image.fromarray(_rgb(4, 4)), tmp_path / "anim.gif")
    (tmp_path / "sub").mkdir()
    _save(Image.fromarray(_rgb(20, 20)), tmp_path / "sub" / "nested.png")

    with pytest.warns(DataWarning) as record:
        files = list_images(tmp_path)
    assert files == [good]
    assert len([w for w in record if w.category is DataWarning]) == 1
    message = str(record[0].message)
    for name in ("notes.txt", "fake.png", "empty.jpg", "cut.png", "anim.gif"):
        assert name in message
    assert ".hidden" not in message and "nested" not in message
    with pytest.warns(DataWarning):
        assert [f.name for f in list_images(tmp_path, recursive=True)] == ["good.png", "nested.png"]


def test_truncated_file_found_at_load_is_replaced_once(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        _save(Image.fromarray(_rgb(64, 64)), tmp_path / name, quality=95)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files = list_images(tmp_path)  # the header is fine: it passes the cheap check
    assert len(files) == 2

    dataset = ImageDataset(files, crop_size=32)
    with pytest.warns(DataWarning, match="a.jpg") as record:
        x = dataset[(0, 123)]
    assert len(record) == 1
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x, dataset[(1, 123)])  # the next readable image, same crop
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset[0].shape == (3, 32, 32)  # remembered: no second warning
    assert dataset.bad == {files[0]}


def test_missing_empty_and_unreadable_folders(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"nowhere does not exist"):
        list_images(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no usable image in .*empty"):
        list_images(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("nope")
    with pytest.raises(DataError, match=r"bad .*x\.png \(not an image\)"):
        list_images(bad)
    dm = ImageDataModule(train_dir=empty)
    with pytest.raises(DataError, match="empty"):
        dm.setup("fit")


def test_load_rgb_image_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"image not found: .*gone\.png"):
        load_rgb_image(tmp_path / "gone.png")
    (tmp_path / "x.png").write_text("text")
    with pytest.raises(DataError, match=r"cannot read image .*x\.png \(not an image\)"):
        load_rgb_image(tmp_path / "x.png")


# -- crops, seeds, loaders --------------------------------------------------------------------
@pytest.mark.parametrize(("h", "w", "size"), [(1, 1, 16), (3, 5, 8), (5, 3, 8), (40, 300, 64)])
def test_small_images_reflect_padded(h: int, w: int, size: int) -> None:
    image = _rgb(h, w)
    crop = random_crop(image, size, np.random.default_rng(0))
    assert crop.shape == (size, size, 3)
    if h < size and w < size:  # padded on both sides: the crop is the whole padded image
        pads = [((size - n) // 2, size - n - (size - n) // 2) for n in (h, w)]
        np.testing.assert_array_equal(crop, np.pad(image, [*pads, (0, 0)], mode="reflect"))
    if h == w == 1:
        assert (crop == image[0, 0]).all()


def _batches(dm: ImageDataModule, epochs: int = 2) -> list[torch.Tensor]:
    dm.setup("fit")
    loader = dm.train_dataloader()
    return [batch for _ in range(epochs) for batch in loader]


def test_same_seed_same_batches(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [(48, 40), (40, 64), (30, 30), (64, 64), (20, 50)])
    kwargs = {"train_dir": folder, "crop_size": 32, "batch_size": 2, "num_workers": 0}
    first = _batches(ImageDataModule(seed=7, **kwargs))
    second = _batches(ImageDataModule(seed=7, **kwargs))
    other = _batches(ImageDataModule(seed=8, **kwargs))
    assert [b.shape[0] for b in first] == [2, 2, 1, 2, 2, 1]
    assert first[0].dtype == torch.float32 and first[0].min() >= 0 and first[0].max() <= 1
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert not torch.equal(torch.cat(first[:3]), torch.cat(first[3:]))  # epochs differ
    workers = _batches(ImageDataModule(seed=7, **{**kwargs, "num_workers": 2}), epochs=1)
    for a, b in zip(first[:3], workers, strict=True):  # crops do not depend on the workers
        torch.testing.assert_close(a, b)


def test_cached_images_give_the_same_batches_and_decode_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path, [(48, 40), (40, 64), (30, 30)])
    kwargs = {"train_dir": folder, "crop_size": 32, "batch_size": 2, "num_workers": 0, "seed": 3}
    plain = _batches(ImageDataModule(**kwargs), epochs=3)
    decoded: list[Path] = []
    original = datamodule.load_rgb_image

    def counting(path: Path) -> np.ndarray:
        decoded.append(Path(path))
        return original(path)

    monkeypatch.setattr(datamodule, "load_rgb_image", counting)
    cached = _batches(ImageDataModule(cache_images=True, **kwargs), epochs=3)
    for a, b in zip(plain, cached, strict=True):
        torch.testing.assert_close(a, b)
    assert sorted(decoded) == sorted(set(decoded)) and len(decoded) == 3  # each file once


def test_validation_and_test_use_whole_images(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [(30, 40), (40, 30), (30, 40)])
    dm = ImageDataModule(train_dir=folder, val_dir=folder, max_val_images=2)
    dm.setup("fit")
    shapes = [tuple(b.shape) for b in dm.val_dataloader()]
    assert shapes == [(1, 3, 30, 40), (1, 3, 40, 30)]
    dm.setup("test")  # no test_dir: all the validation images (max_val_images is for val only)
    assert len(dm.test_dataloader()) == 3
    mixed = ImageDataModule(val_dir=folder, val_batch_size=2)
    mixed.setup("validate")
    with pytest.raises(DataError, match="val_batch_size=1"):
        next(iter(mixed.val_dataloader()))


def test_bad_arguments_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.source='web' is unknown"):
        ImageDataModule(source="web")
    with pytest.raises(DataError, match=r"data\.crop_size=0"):
        ImageDataModule(crop_size=0)
    with pytest.raises(DataError, match=r"data\.train_dir"):
        ImageDataModule(val_dir=_folder(tmp_path, [(8, 8)])).setup("fit")
    with pytest.raises(DataError, match=r"data\.val_dir"):
        ImageDataModule(train_dir=tmp_path / "imgs").setup("validate")


class _Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.clone())
        return (self.w * batch).mean()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val", batch.mean(), batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_overfit_batches_repeats_the_same_crops(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [(48, 48)] * 4)
    dm = ImageDataModule(train_dir=folder, val_dir=folder, crop_size=16, batch_size=2)
    model = _Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        overfit_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(overfit|num_workers|bottleneck).*")
        trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 2 and model.seen[0].shape == (2, 3, 16, 16)
    torch.testing.assert_close(model.seen[0], model.seen[1])
    assert "val" in trainer.callback_metrics


# -- bundled sample and Hydra configs ---------------------------------------------------------
def test_sample_photos_present_and_large_enough() -> None:
    train, val = sample_images("train"), sample_images("val")
    assert len(train) == len(SAMPLE_SPLITS["train"]) >= 5 and len(val) == 2
    assert not {p.name for p in train} & {p.name for p in val}
    for path in train + val:
        with Image.open(path) as im:
            assert im.mode == "RGB" and min(im.size) >= 256, path.name
    with pytest.raises(DataError, match="unknown sample split"):
        sample_images("test")


def _compose_data(option: str, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(overrides=[f"+data={option}", "+paths=default", *overrides])


def test_sample_config_instantiates_and_loads() -> None:
    cfg = _compose_data("sample", "data.num_workers=0", "data.batch_size=3")
    assert cfg.data.crop_size == 256
    dm = instantiate(cfg.data)
    assert isinstance(dm, ImageDataModule)
    dm.setup("fit")
    assert len(dm.split_files("train")) == 7 and len(dm.split_files("val")) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (3, 3, 256, 256) and batch.min() >= 0 and batch.max() <= 1


@pytest.mark.parametrize(
    ("option", "counts"),
    [("photos", {"train": 32, "val": 8, "test": 8}), ("kodak", {"val": 24, "test": 24})],
)
def test_shared_configs_resolve(shared: Path, option: str, counts: dict[str, int]) -> None:
    if option == "photos":
        require_shared("data/photos")
    cfg = _compose_data(option)
    assert cfg.data.crop_size == 256
    dm = instantiate(cfg.data)
    dm.setup("validate")
    dm.setup("test")
    if "train" in counts:
        dm.setup("fit")
    else:
        with pytest.raises(DataError, match="train_dir"):
            dm.setup("fit")
    found = {split: dm.split_files(split) for split in ("train", "val", "test")}
    assert {split: len(files) for split, files in found.items() if files} == counts
    assert all(shared in path.parents for files in found.values() for path in files)
    moved = _compose_data(option, f"data.val_dir={shared / 'data' / 'kodak'}")
    assert moved.data.val_dir.endswith("kodak")
