"""Quality control to a target PSNR, and ``lae-vbr compress`` on folders (per image and within
a total size), on the tiny scaling model of :mod:`test_rate_control`."""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from lae_vbr.cli import main
from lae_vbr.codec import quality_control
from lae_vbr.codec.container import read_bitstream
from lae_vbr.codec.errors import RateError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image
from lae_vbr.codec.probe import ImageProbe, psnr_8bit
from lae_vbr.codec.quality_control import encode_to_psnr
from lae_vbr.codec.rate_control import RateControlWarning
from test_rate_control import scaling_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return scaling_files(tmp_path_factory.mktemp("quality"))


@pytest.fixture(scope="module")
def codec(files: dict[str, Path]) -> ImageCodec:
    return ImageCodec.load(files["vbr"])


@pytest.fixture(scope="module")
def image(files: dict[str, Path]) -> torch.Tensor:
    return read_image(files["image"])


class CurvedProbe(ImageProbe):
    """A probe whose PSNR is a known, gently concave curve of the log of the estimated rate
    (0.4 dB off the line through its ends), 30 dB at λ index 0 to 35 dB at the top: a wider
    range than the tiny model has, to check the search itself."""

    def curve(self, idx: float) -> float:
        def log_rate(i: float) -> float:
            return math.log(self.estimate_bits(i))

        r0, r1 = log_rate(0.0), log_rate(self.rates.max_index)
        t = (log_rate(idx) - r0) / (r1 - r0)
        return 30.0 + 5.4 * t - 0.4 * t * t

    def psnr(self, lmbda_idx: float) -> float:
        self.reconstructions += 1
        return self.curve(lmbda_idx)


@pytest.fixture
def curved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quality_control, "ImageProbe", CurvedProbe)


@pytest.mark.parametrize("method", ["interpolate", "secant"])
@pytest.mark.parametrize(("rounds", "tolerance"), [(2, 0.1), (3, 0.03)])
def test_psnr_targets_are_met_with_few_rounds_and_one_encode(
    curved, codec, image, method, rounds, tolerance
):
    truth = CurvedProbe(codec, image)
    for target in (30.3, 31.5, 32.5, 33.7, 34.8):
        result = encode_to_psnr(codec, image, target, method=method, slope=5.0, rounds=rounds)
        assert len(result.rounds) <= rounds and result.encodes == 1
        real = truth.curve(result.lmbda_idx)
        assert abs(real - target) <= tolerance, (method, target, real, result.rounds)
        assert abs(result.psnr - real) <= tolerance  # what it reports is what the file has
        assert result.stream.to_bytes() == codec.encode(image, result.lmbda_idx).to_bytes()


def test_a_round_on_target_is_kept_and_measured(curved, codec, image) -> None:
    middle = CurvedProbe(codec, image).curve(2.5)
    result = encode_to_psnr(codec, image, middle + 0.01)
    assert result.rounds == [(2.5, middle)] and result.measured and result.lmbda_idx == 2.5


def test_psnr_targets_beyond_the_range_clamp_with_a_warning(curved, codec, image) -> None:
    with pytest.warns(
        RateControlWarning, match=r"40 dB is above .* \(about 30[.0-9]*–35 dB\).*highest"
    ):
        result = encode_to_psnr(codec, image, 40.0)
    assert result.lmbda_idx == 5.0 and result.clamped == "high" and result.measured
    with pytest.warns(RateControlWarning, match=r"20 dB is below .*lowest quality, λ index 0"):
        assert encode_to_psnr(codec, image, 20.0).lmbda_idx == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RateControlWarning)
        encode_to_psnr(codec, image, 32.0)


def test_psnr_control_on_the_real_reconstruction(codec, image) -> None:
    probe = ImageProbe(codec, image)
    target = probe.psnr(1.7)
    result = encode_to_psnr(codec, image, target)
    decoded = psnr_8bit(image, codec.decode(result.stream))
    assert abs(decoded - target) <= 0.1 and len(result.rounds) <= 3
    if result.measured:
        assert result.psnr == pytest.approx(decoded, abs=1e-3)


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan")])
def test_bad_psnr_targets_are_rejected(codec, image, bad) -> None:
    with pytest.raises(RateError, match="positive number of dB"):
        encode_to_psnr(codec, image, bad)


# -- the command line: --psnr, and folders ----------------------------------------------------
def run(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_psnr(files, codec, image, tmp_path, capsys) -> None:
    target = ImageProbe(codec, image).psnr(3.0)
    out = tmp_path / "p.lae"
    args = ["compress", files["image"], out, "--psnr", f"{target:.3f}", "--checkpoint"]
    code, printed, _ = run([*args, files["vbr"]], capsys)
    assert code == 0 and f"dB (target {float(f'{target:.3f}'):g} dB, " in printed
    decoded = psnr_8bit(image, codec.decode(read_bitstream(out)))
    assert abs(decoded - target) <= 0.1
    code, _, err = run(["compress", files["image"], out, "--psnr", 90, "--checkpoint",
                        files["vbr"]], capsys)  # fmt: skip
    assert code == 0 and err.startswith("lae-vbr: warning: target 90 dB is above what the model")
    assert err.count("\n") == 1


@pytest.fixture
def folder(files, tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(files["image"], folder / "b.png")
    shutil.copy(files["other"], folder / "a.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    return folder


def test_cli_folder_codes_each_image_to_its_target(files, folder, tmp_path, capsys) -> None:
    out_dir = tmp_path / "out"
    code, printed, _ = run(["compress", folder, out_dir, "--bpp", 2.0, "--checkpoint",
                            files["vbr"]], capsys)  # fmt: skip
    assert code == 0 and sorted(p.name for p in out_dir.iterdir()) == ["a.lae", "b.lae"]
    lines = printed.strip().splitlines()
    assert [line.split(" -> ")[0] for line in lines[:2]] == [str(folder / f"{n}.png") for n in "ab"]
    assert all("(target 2 bpp, " in line for line in lines[:2])
    assert lines[2].startswith("total: 2 files, ")
    for name in ("a", "b"):
        assert abs(read_bitstream(out_dir / f"{name}.lae").bpp / 2.0 - 1) <= 0.015
    code, printed, _ = run(["compress", folder, out_dir, "--quality", 1, "--checkpoint",
                            files["vbr"]], capsys)  # fmt: skip
    assert code == 0 and printed.count("λ index 1,") == 2


def test_cli_folder_within_a_total_size(files, folder, codec, tmp_path, capsys) -> None:
    pictures = [read_image(p) for p in sorted(folder.glob("*.png"))]
    ends = [sum(codec.encode(x, i).num_bytes for x in pictures) for i in (0, 5)]
    budget = (ends[0] + ends[1]) // 2
    out_dir = tmp_path / "set"
    code, printed, _ = run(["compress", folder, out_dir, "--total-size", budget, "--checkpoint",
                            files["vbr"]], capsys)  # fmt: skip
    streams = [read_bitstream(out_dir / f"{n}.lae") for n in "ab"]
    assert code == 0 and sum(s.num_bytes for s in streams) <= budget
    assert sum(s.num_bytes for s in streams) >= 0.985 * budget
    assert streams[0].lmbda_idx == streams[1].lmbda_idx  # one λ for every image
    lines = printed.strip().splitlines()
    assert len(lines) == 3 and f"(at most {budget}), " in lines[2]
    assert f"λ index {streams[0].lmbda_idx:g} for every image" in lines[2]


def test_cli_folder_usage_errors_before_the_model_loads(files, folder, tmp_path, capsys,
                                                         monkeypatch) -> None:  # fmt: skip
    import lae_vbr.cli.folder as folder_command

    monkeypatch.setattr(
        folder_command, "load_codec_for", lambda *a: pytest.fail("the model was loaded")
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    clash = tmp_path / "clash"
    clash.mkdir()
    shutil.copy(files["image"], clash / "x.png")
    shutil.copy(files["image"], clash / "x.ppm")
    a_file = tmp_path / "file.lae"
    a_file.write_bytes(b"")
    cases = [
        ([empty, tmp_path / "o", "--bpp", 1], "no images (PNG, JPEG, WebP, PPM) in folder"),
        ([clash, tmp_path / "o", "--bpp", 1], "would both be written to x.lae"),
        ([folder, a_file, "--bpp", 1], "the output must be one"),
        ([folder, tmp_path / "no" / "o", "--bpp", 1], "parent does not exist"),
        ([folder, tmp_path / "o", "--total-size", "lots"], "--total-size: not a size"),
        ([folder, tmp_path / "o"], "is variable-rate: pass --quality Q"),
    ]
    for args, message in cases:
        code, _, err = run(["compress", *args, "--checkpoint", files["vbr"]], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_psnr_probe_reconstruction_is_the_decoder_output(codec, image) -> None:
    probe = ImageProbe(codec, image)
    stream = probe.encode(4.0)
    assert torch.allclose(probe.reconstruct(4.0), codec.decode(stream), atol=1e-4)
