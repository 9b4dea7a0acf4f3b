"""The codec API and the ``lae-vbr`` command line, with tiny random-weight models."""

from __future__ import annotations

import dataclasses
import importlib.resources
import io
import json
import random
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_cfg, tiny_codec_with_laes, write_noisy_ramp
from lae_vbr.cli import main
from lae_vbr.codec.container import MAX_SIDE, Bitstream, ContainerError, ModelId, read_bitstream
from lae_vbr.codec.digest import weights_digest
from lae_vbr.codec.errors import DecodeError, ModelMismatchError, RateError
from lae_vbr.codec.image_codec import ImageCodec
from lae_vbr.codec.images import read_image, write_png
from lae_vbr.data.tensors import tensor_to_uint8 as to_uint8
from lae_vbr.models.rate import index_of_value as lmbda_to_index
from lae_vbr.models.registry import PAPER_MSE_LMBDAS, load_codec, save_codec_bundle


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny models' tensors are too small to gain from threads; on a busy machine the
    OpenMP workers' spin-waiting would multiply the run time instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints (variable-rate with λ-dependent LAEs, its fp16 twin, fixed-rate) and a
    test image."""
    root = tmp_path_factory.mktemp("codec")
    cfg, vbr = tiny_codec_with_laes()
    fixed_cfg = tiny_cfg(lae={"enabled": False})
    write_noisy_ramp(root / "img.png", 48, 70, noise=20, seed=0)
    return {
        "vbr": save_codec_bundle(root / "tiny.pt", vbr, cfg),
        "half": save_codec_bundle(root / "half.pt", vbr, cfg, half=True),
        "fixed": save_codec_bundle(
            root / "fixed.pt", hydra.utils.instantiate(fixed_cfg["model"]), fixed_cfg
        ),
        "image": root / "img.png",
    }


_REAL_LOAD = ImageCodec.load.__func__
_LOADED: dict[str, ImageCodec] = {}


def _load_once(
    cls: type[ImageCodec], checkpoint: Path | None = None, device: object = None
) -> ImageCodec:
    if checkpoint is None or device is not None:  # the demo model, other devices: not cached
        return _REAL_LOAD(cls, checkpoint, device)
    if str(checkpoint) not in _LOADED:
        _LOADED[str(checkpoint)] = _REAL_LOAD(cls, checkpoint)
    return _LOADED[str(checkpoint)]


@pytest.fixture(autouse=True)
def load_each_checkpoint_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line loads its checkpoint per call; here each file is loaded (for real)
    once per module, to keep the tests fast."""
    monkeypatch.setattr(ImageCodec, "load", classmethod(_load_once))


@pytest.fixture(scope="module")
def codec(files: dict[str, Path]) -> ImageCodec:
    return _load_once(ImageCodec, files["vbr"])


@pytest.fixture(scope="module")
def fixed(files: dict[str, Path]) -> ImageCodec:
    return _load_once(ImageCodec, files["fixed"])


def run(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int, *fragments: str) -> None:
    assert code == expected_code
    assert err.startswith("lae-vbr: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# -- weights digest and λ mapping ---------------------------------------------------------------
def test_fp16_bundle_keeps_buffers_in_float32(files) -> None:
    """Only learned weights are halved: the 1e-9 likelihood bound must not round to 0."""
    stored = torch.load(files["half"], weights_only=True)["state_dict"]
    bound = stored["gaussian_conditional.likelihood_lower_bound.bound"]
    assert bound.dtype == torch.float32 and float(bound) == pytest.approx(1e-9)
    assert stored["g_a.0.conv1.weight"].dtype == torch.float16
    model = load_codec(files["half"]).model
    with torch.inference_mode():
        likelihoods = model(torch.zeros(1, 3, 64, 64), 5.0)["likelihoods"]
    assert all(float(v.min()) >= 1e-9 for v in likelihoods.values())


def test_digest_is_the_same_for_an_fp16_bundle_and_its_loaded_model(files) -> None:
    stored = torch.load(files["half"], weights_only=True)["state_dict"]
    loaded = load_codec(files["half"]).model
    assert weights_digest(stored) == weights_digest(loaded)
    assert weights_digest(loaded) != weights_digest(load_codec(files["vbr"]).model)
    before = weights_digest(loaded)
    loaded.update()  # entropy tables are derived: not part of the identity
    assert weights_digest(loaded) == before
    assert len(before) == 8


def test_lmbda_maps_log_linearly_onto_the_index() -> None:
    lmbdas = PAPER_MSE_LMBDAS
    assert lmbda_to_index(lmbdas, 0.0025) == 0.0
    assert lmbda_to_index(lmbdas, 0.05) == 5.0
    assert lmbda_to_index(lmbdas, 0.013) == 3.0
    assert lmbda_to_index(lmbdas, (0.013 * 0.025) ** 0.5) == pytest.approx(3.5)
    assert lmbda_to_index(lmbdas[::-1], 0.05) == 0.0  # a decreasing set works too
    with pytest.raises(RateError, match=r"outside the trained range \[0.0025, 0.05\]"):
        lmbda_to_index(lmbdas, 0.06)


# -- API: exact round trips ---------------------------------------------------------------------
def test_round_trip_equals_the_models_own_decoding(codec: ImageCodec, files) -> None:
    x = read_image(files["image"])
    stream = Bitstream.from_bytes(codec.encode(x, 2.3).to_bytes())
    idx = stream.lmbda_idx
    with torch.inference_mode():
        enc = codec.model.compress(x, idx)
        ref = codec.model.decompress(enc["strings"], enc["shape"], idx)
    assert stream.y_string == enc["strings"][0][0] and stream.z_string == enc["strings"][1][0]
    assert torch.equal(codec.decode(stream), ref["x_hat"])
    assert stream.num_bytes == len(stream.y_string) + len(stream.z_string) + stream.overhead
    assert stream.overhead <= 41  # version 2: + arithmetic byte, tables and symbols CRCs


def test_fixed_rate_round_trip_through_files(fixed: ImageCodec, files, tmp_path) -> None:
    lae, png = tmp_path / "f.lae", tmp_path / "f.png"
    stream = fixed.encode(read_image(files["image"]), None)
    stream.write(lae)
    assert stream.lmbda_idx is None and lae.read_bytes() == stream.to_bytes()
    read_back = read_bitstream(lae)
    write_png(fixed.decode(read_back), png)
    assert read_back == stream
    with torch.inference_mode():
        enc = fixed.model.compress(read_image(files["image"]))
        ref = fixed.model.decompress(enc["strings"], enc["shape"])
    assert enc["shape"] == (48, 70) and ref["x_hat"].shape[-2:] == (48, 70)
    assert stream.y_string == enc["strings"][0][0]
    assert np.array_equal(np.asarray(Image.open(png)), to_uint8(ref["x_hat"]))


def test_lambda_index_changes_the_stream(codec: ImageCodec, files) -> None:
    x = read_image(files["image"])
    low, high = codec.encode(x, 0.0), codec.encode(x, 5.0)
    assert low.y_string != high.y_string
    assert not torch.equal(codec.decode(low), codec.decode(high))


def test_decoding_refuses_files_it_cannot_decode(codec: ImageCodec, fixed: ImageCodec, files):
    stream = codec.encode(read_image(files["image"]), 1.0)
    with pytest.raises(ModelMismatchError, match=r"'tiny'.*'fixed'"):
        fixed.decode(stream)
    same = ModelId("renamed", stream.model.digest)  # the digest decides, not the name
    assert torch.equal(
        codec.decode(dataclasses.replace(stream, model=same)),
        codec.decode(stream),
    )
    bad = [
        Bitstream(stream.model, 7.0, 48, 70, stream.z_string, stream.y_string),
        Bitstream(stream.model, None, 48, 70, stream.z_string, stream.y_string),
        Bitstream(stream.model, 1.0, 8000, 8000, stream.z_string, stream.y_string),
    ]
    for candidate in bad:  # each refused before anything reaches the entropy decoder
        with pytest.raises(DecodeError):
            codec.decode(candidate)


def test_rate_settings(codec: ImageCodec, fixed: ImageCodec) -> None:
    assert codec.rate_index(quality=2.5) == 2.5
    assert codec.rate_index(lmbda=0.0067) == 2.0
    assert fixed.rate_index() is None
    for kwargs in ({}, {"quality": 1, "lmbda": 0.01}, {"quality": 5.5}, {"quality": -1}):
        with pytest.raises(RateError):
            codec.rate_index(**kwargs)
    with pytest.raises(RateError, match="fixed-rate"):
        fixed.rate_index(quality=1)


# -- command line -------------------------------------------------------------------------------
def test_cli_compress_decompress_info(files, codec: ImageCodec, tmp_path, capsys) -> None:
    lae, png = tmp_path / "a.lae", tmp_path / "a.png"
    code, out, _ = run(
        ["compress", files["image"], lae, "--checkpoint", files["vbr"], "--quality", 2.75], capsys
    )
    assert code == 0 and "λ index 2.75" in out
    code, out, _ = run(["decompress", lae, png, "--checkpoint", files["vbr"]], capsys)
    assert code == 0 and "70×48" in out
    stream = Bitstream.from_bytes(lae.read_bytes())
    expected = to_uint8(codec.decode(stream))
    assert np.array_equal(np.asarray(Image.open(png)), expected)

    code, out, _ = run(["info", lae], capsys)
    assert code == 0
    for fragment in ("tiny", stream.model.digest.hex(), "λ index 2.75", "70×48", "bpp"):
        assert fragment in out
    code, out, _ = run(["info", lae, "--json"], capsys)
    fields = json.loads(out)
    assert code == 0
    assert fields["lmbda_idx"] == 2.75 and (fields["width"], fields["height"]) == (70, 48)
    assert fields["file_bytes"] == lae.stat().st_size
    assert fields["bpp"] == pytest.approx(8 * lae.stat().st_size / (70 * 48))


def test_cli_lmbda_equals_its_quality(files, tmp_path, capsys) -> None:
    by_lmbda, by_quality = tmp_path / "l.lae", tmp_path / "q.lae"
    base = ["compress", files["image"], "--checkpoint", files["vbr"]]
    assert run([*base[:2], by_lmbda, *base[2:], "--lmbda", 0.013], capsys)[0] == 0
    assert run([*base[:2], by_quality, *base[2:], "--quality", 3], capsys)[0] == 0
    assert by_lmbda.read_bytes() == by_quality.read_bytes()


def test_cli_fixed_rate_and_other_input_formats(files, fixed: ImageCodec, tmp_path, capsys):
    source = Image.open(files["image"])
    for fmt in ("JPEG", "WEBP", "PPM"):
        image = tmp_path / f"img.{fmt.lower()}"
        source.save(image, format=fmt)
        lae = tmp_path / f"{fmt}.lae"
        code, _, err = run(["compress", image, lae, "--checkpoint", files["fixed"]], capsys)
        assert code == 0, err
        stream = Bitstream.from_bytes(lae.read_bytes())
        assert stream.lmbda_idx is None and (stream.width, stream.height) == (70, 48)
    gray = tmp_path / "gray.png"
    source.convert("L").save(gray)
    assert read_image(gray).shape == (1, 3, 48, 70)


def test_cli_usage_errors_exit_2(files, tmp_path, capsys) -> None:
    image, out, vbr = files["image"], tmp_path / "o.lae", files["vbr"]
    cases = [
        (["compress", tmp_path / "none.png", out, "--quality", 1], "input not found"),
        (["compress", image, tmp_path / "no" / "o.lae", "--quality", 1], "does not exist"),
        (["compress", image, out, "--checkpoint", tmp_path / "x.pt"], "checkpoint not found"),
        (["compress", image, out, "--checkpoint", vbr, "--quality", 9], "[0, 5]"),
        (["compress", image, out, "--checkpoint", vbr, "--lmbda", 1.0], "[0.0025, 0.05]"),
        (["compress", image, out, "--checkpoint", vbr], "--quality Q"),
        (["compress", image, out, "--checkpoint", files["fixed"], "--lmbda", 0.01], "fixed"),
        (["decompress", image, tmp_path / "o.jpg", "--checkpoint", vbr], "*.png"),
    ]
    for args, fragment in cases:
        code, _, err = run(args, capsys)
        assert_one_line_error(code, err, 2, fragment)
    assert not out.exists()
    code, _, err = run(["compress", image, out, "--quality", 1, "--lmbda", 0.01], capsys)
    assert code == 2 and "not allowed with argument" in err  # argparse's own check


def test_missing_demo_model_is_reported(files, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    code, _, err = run(["compress", files["image"], tmp_path / "o.lae", "--quality", 1], capsys)
    assert_one_line_error(code, err, 2, "demo model", "--checkpoint")


def test_bundled_demo_model_codes_without_a_checkpoint(files, tmp_path, capsys) -> None:
    """Right after install: no --checkpoint, the packaged demo model (≤ 10 MB) codes and
    decodes, and a higher λ index gives a larger file."""
    asset = importlib.resources.files("lae_vbr").joinpath("assets", "demo.pt")
    assert asset.is_file(), "the package must ship lae_vbr/assets/demo.pt"
    assert Path(str(asset)).stat().st_size <= 10 * 10**6
    sizes = []
    for quality in (0, 5):
        out = tmp_path / f"q{quality}.lae"
        code, _, _ = run(["compress", files["image"], out, "--quality", quality], capsys)
        assert code == 0 and "lae-vbr-demo" in run(["info", out], capsys)[1]
        png = tmp_path / f"q{quality}.png"
        assert run(["decompress", out, png], capsys)[0] == 0
        assert np.asarray(Image.open(png)).shape == (48, 70, 3)
        sizes.append(out.stat().st_size)
    assert sizes[0] < sizes[1]


def test_cli_bad_data_exits_1(files, tmp_path, capsys) -> None:
    lae = tmp_path / "ok.lae"
    assert run(["compress", files["image"], lae, "--checkpoint", files["fixed"]], capsys)[0] == 0
    data = lae.read_bytes()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    bad = {
        "truncated.lae": data[:-7],
        "flipped.lae": bytes(flipped),
        "random.lae": random.Random(0).randbytes(500),
        "magic.lae": b"XYZ" + data[3:],
        "version.lae": data[:3] + b"\x07" + data[4:],
    }
    for name, content in bad.items():
        path = tmp_path / name
        path.write_bytes(content)
        decompress = ["decompress", path, tmp_path / "o.png", "--checkpoint", files["vbr"]]
        for args in (["info", path], decompress):
            code, _, err = run(args, capsys)
            assert_one_line_error(code, err, 1)
    code, _, err = run(
        ["decompress", lae, tmp_path / "o.png", "--checkpoint", files["vbr"]], capsys
    )
    assert_one_line_error(code, err, 1, "'fixed'", "'tiny'")
    code, _, err = run(
        ["compress", text, tmp_path / "t.lae", "--checkpoint", files["fixed"]], capsys
    )
    assert_one_line_error(code, err, 1, "notes.png")
    assert not (tmp_path / "o.png").exists()


def test_fuzzed_files_never_reach_the_decoder(codec: ImageCodec, files, monkeypatch) -> None:
    stream = codec.encode(read_image(files["image"]), 3.0)
    data = stream.to_bytes()

    def must_not_run(*args, **kwargs):
        raise AssertionError("corrupt data reached the entropy decoder")

    monkeypatch.setattr(codec.model, "decompress", must_not_run)
    rng = random.Random(7)
    for i in range(250):
        bad = bytearray(data)
        if i % 5 == 0:
            bad = bad[: rng.randrange(len(bad))]
        else:
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(len(bad))] ^= rng.randint(1, 255)
        with pytest.raises(ContainerError):
            codec.decode(Bitstream.from_bytes(bytes(bad)))
    # a checksummed file from this model asking for a huge image is stopped by the size check
    z, y = stream.z_string, stream.y_string
    hostile = Bitstream(stream.model, 3.0, MAX_SIDE, MAX_SIDE, z, y).to_bytes()
    with pytest.raises(DecodeError, match="limit"):
        codec.decode(Bitstream.from_bytes(hostile))


def test_kodak_image_through_the_cli(shared: Path, files, tmp_path, capsys) -> None:
    source = shared / "data" / "kodak" / "kodim23.png"
    lae, png = tmp_path / "k.lae", tmp_path / "k.png"
    args = ["compress", source, lae, "--checkpoint", files["vbr"], "--lmbda", 0.004]
    code, out, err = run(args, capsys)
    assert code == 0 and "768×512" in out, err
    assert run(["decompress", lae, png, "--checkpoint", files["vbr"]], capsys)[0] == 0
    decoded = np.asarray(Image.open(png))
    assert decoded.shape == (512, 768, 3) and decoded.dtype == np.uint8
    fields = json.loads(run(["info", lae, "--json"], capsys)[1])
    assert fields["lmbda_idx"] == pytest.approx(lmbda_to_index(PAPER_MSE_LMBDAS, 0.004))
    assert fields["bpp"] == pytest.approx(8 * lae.stat().st_size / (768 * 512))
    assert fields["header_bytes"] <= 45  # version 2: + arithmetic byte, two CRCs


def test_package_exports_the_api_lazily() -> None:
    import lae_vbr.codec as package

    assert package.ImageCodec is ImageCodec and package.Bitstream is Bitstream
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


def test_entry_point_runs_as_a_module(tmp_path) -> None:
    junk = tmp_path / "junk.lae"
    junk.write_bytes(b"LAE\x01" + bytes(64))
    done = subprocess.run(
        [sys.executable, "-m", "lae_vbr.cli", "info", str(junk)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("lae-vbr: error: ") and "Traceback" not in done.stderr


# -- command-line conveniences ------------------------------------------------------------------
class _Pipe(io.TextIOWrapper):
    """A non-terminal standard stream over bytes (what a shell pipe looks like)."""

    def __init__(self, data: bytes = b"", tty: bool = False) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_version_and_python_m_lae_vbr() -> None:
    import lae_vbr

    done = subprocess.run(
        [sys.executable, "-m", "lae_vbr", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == f"lae-vbr {lae_vbr.__version__}"


def test_stdin_and_stdout(files, tmp_path, monkeypatch, capsys) -> None:
    """'-' reads the input from stdin and writes the output to stdout; the summary line goes
    to stderr then, and the bytes equal those of a file-to-file run."""
    image = files["image"].read_bytes()
    monkeypatch.setattr(sys, "stdin", _Pipe(image))
    monkeypatch.setattr(sys, "stdout", out := _Pipe())
    code = main(["compress", "-", "-", "--checkpoint", str(files["vbr"]), "--quality", "2"])
    stream = out.buffer.getvalue()
    assert code == 0 and "<stdin> -> <stdout>" in capsys.readouterr().err
    on_disk = tmp_path / "a.lae"
    monkeypatch.setattr(sys, "stdout", _Pipe())
    main(["compress", str(files["image"]), str(on_disk), "--checkpoint", str(files["vbr"]),
          "--quality", "2"])  # fmt: skip
    assert stream == on_disk.read_bytes()

    monkeypatch.setattr(sys, "stdin", _Pipe(stream))
    monkeypatch.setattr(sys, "stdout", out := _Pipe())
    assert main(["decompress", "-", "-", "--checkpoint", str(files["vbr"])]) == 0
    assert Image.open(io.BytesIO(out.buffer.getvalue())).size == (70, 48)
    monkeypatch.setattr(sys, "stdin", _Pipe(stream))
    monkeypatch.setattr(sys, "stdout", out := _Pipe())
    assert main(["info", "-", "--json"]) == 0
    assert json.loads(_text(out))["file_bytes"] == len(stream)


def test_binary_output_to_a_terminal_is_refused(files, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdout", _Pipe(tty=True))
    code = main(["compress", str(files["image"]), "-", "--checkpoint", str(files["vbr"]),
                 "--quality", "1"])  # fmt: skip
    assert_one_line_error(code, capsys.readouterr().err, 2, "terminal")


def test_rate_mistakes_are_reported_without_loading_the_model(
    files, tmp_path, monkeypatch, capsys
) -> None:
    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ImageCodec, "load", classmethod(must_not_load))
    out = tmp_path / "o.lae"
    cases = [
        (["--checkpoint", files["vbr"]], "'tiny' is variable-rate", "[0, 5]", "[0.0025, 0.05]"),
        ([], "'lae-vbr-demo' is variable-rate", "--quality Q"),
        (["--checkpoint", files["fixed"], "--bpp", 0.5], "is fixed-rate"),
    ]
    for extra, *fragments in cases:
        code, _, err = run(["compress", files["image"], out, *extra], capsys)
        assert_one_line_error(code, err, 2, *fragments)


def test_peek_reads_the_rate_kind_without_torch_load(files, tmp_path) -> None:
    from helpers import tiny_vbr
    from lae_vbr.codec.peek import peek_rate_axis

    assert peek_rate_axis(files["vbr"], "x").variable
    assert peek_rate_axis(files["vbr"], "x").lmbdas == PAPER_MSE_LMBDAS
    assert not peek_rate_axis(files["fixed"], "x").variable
    reference = tmp_path / "reference.pth.tar"
    torch.save({"state_dict": tiny_vbr().state_dict()}, reference)
    axis = peek_rate_axis(reference, "reference")
    assert axis.variable and axis.model == "'tcm-vbr:reference'" and axis.max_index == 5
    legacy = tmp_path / "legacy.pt"
    torch.save(tiny_vbr().state_dict(), legacy, _use_new_zipfile_serialization=False)
    assert peek_rate_axis(legacy, "legacy") is None  # undecided: the model's own check decides
    assert peek_rate_axis(files["image"], "image") is None


def test_threads_and_device_options(files, tmp_path, monkeypatch, capsys) -> None:
    args = ["compress", files["image"], tmp_path / "o.lae", "--checkpoint", files["vbr"]]
    code, _, _ = run([*args, "--quality", 1, "--threads", 2], capsys)
    assert code == 0 and torch.get_num_threads() == 2
    torch.set_num_threads(1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run([*args, "--quality", 1, "--device", "cuda"], capsys)
    assert_one_line_error(code, err, 2, "no CUDA GPU", "--device cpu")
    for bad in (["--threads", 0], ["--device", "gpu"]):
        assert run([*args, "--quality", 1, *bad], capsys)[0] == 2


def test_progress_of_long_encodes(codec: ImageCodec, files) -> None:
    """Rate control and refinement report each encode and step; the line is rewritten with a
    carriage return, never with escape codes, and only on a terminal."""
    from lae_vbr.cli.terminal import Progress
    from lae_vbr.codec.rate_control import RateControlWarning, encode_to_bpp
    from lae_vbr.codec.refine import RefineSchedule

    terminal = _Pipe(tty=True)
    with Progress(terminal) as progress, warnings.catch_warnings():
        warnings.simplefilter("ignore", RateControlWarning)  # the random model's range: no matter
        encode_to_bpp(
            codec,
            read_image(files["image"]),
            5.0,
            method="rlambda",  # the paper's: always its two encodes
            refine=RefineSchedule(steps=2, min_change=0.0),
            on_encode=progress.encode,
            on_step=progress.step,
        )
    shown = _text(terminal)
    assert "rate control: encode 2 of at most 2, refining the latents: step 2/2" in shown
    assert "\x1b" not in shown and shown.endswith("\r")
    quiet = _Pipe(tty=False)
    with Progress(quiet) as progress:
        progress.step(1, 2)
    assert _text(quiet) == ""


def _text(stream: _Pipe) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode()
