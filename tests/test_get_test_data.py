"""scripts/get_test_data.py offline: downloads are served from the shared folder (what the
public sources hold, byte for byte), so layout, checksums and failure handling are tested
without a network."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from lae_vbr.paths import REPO_ROOT

spec = importlib.util.spec_from_file_location(
    "get_test_data", REPO_ROOT / "scripts" / "get_test_data.py"
)
gtd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gtd)


def _rd_data(anchors: Path) -> str:
    """LIC_TCM's RD_data.md layout (Kodak sections) holding the shared TCM curves."""
    parts = []
    for size in ("Large", "Middle", "Small"):
        curve = json.loads((anchors / f"tcm-{size.lower()}-paper.json").read_text())["results"]
        psnr = ", ".join(map(str, curve["psnr-rgb"]))
        bpp = ", ".join(map(str, curve["bpp"]))
        parts.append(f"# {size}\n## Kodak\nPSNR = [{psnr}]\n\nBitrate = [{bpp}]\n\n## CLIC Pro\n")
    return "\n".join(parts)


@pytest.fixture
def mirror(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A fetch serving the public files from the shared folder, counting downloads."""
    anchors = shared / "anchors" / "kodak"
    rd_data = _rd_data(anchors).encode()
    monkeypatch.setattr(gtd, "RD_DATA_SHA256", gtd.sha256(rd_data))
    served: dict[str, bytes] = {}
    calls: list[str] = []

    def fetch(url: str, destination: Path) -> None:
        calls.append(url)
        name = url.rsplit("/", 1)[-1]
        if name in served:
            destination.write_bytes(served[name])
        elif name == "RD_data.md":
            destination.write_bytes(rd_data)
        elif name.endswith(".png"):
            shutil.copyfile(shared / "data" / "kodak" / name, destination)
        else:
            shutil.copyfile(anchors / name, destination)

    return {"fetch": fetch, "calls": calls, "served": served, "root": tmp_path / "shared"}


def test_downloads_into_the_tests_layout_and_reruns_cheaply(shared: Path, mirror: dict) -> None:
    root, fetch = mirror["root"], mirror["fetch"]
    assert gtd.main(["--root", str(root)], fetch=fetch) == 0
    kodak = sorted(p.name for p in (root / "data" / "kodak").iterdir())
    assert kodak == [f"kodim{i:02d}.png" for i in range(1, 25)]
    for name in ("vtm.json", "tcm-small-paper.json", "bpg_444_x265_ycbcr.json"):
        made = (root / "anchors" / "kodak" / name).read_bytes()
        assert made == (shared / "anchors" / "kodak" / name).read_bytes()
    assert len(mirror["calls"]) == 24 + len(gtd.COMPRESSAI_ANCHORS) + 1
    mirror["calls"].clear()
    assert gtd.main(["--root", str(root)], fetch=fetch) == 0
    assert mirror["calls"] == []  # everything present and verified: nothing downloaded


def test_a_reencoded_kodak_image_is_accepted_by_its_pixels(shared: Path) -> None:
    source = (shared / "data" / "kodak" / "kodim07.png").read_bytes()
    with Image.open(io.BytesIO(source)) as image:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        other = buffer.getvalue()
        image.putpixel((0, 0), (0, 0, 0) if image.getpixel((0, 0)) != (0, 0, 0) else (1, 1, 1))
        changed = io.BytesIO()
        image.save(changed, format="PNG")
    assert other != source and gtd.kodak_problem("kodim07.png", other) is None
    assert "neither" in gtd.kodak_problem("kodim07.png", changed.getvalue())


def test_a_corrupt_download_is_not_written(
    mirror: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror["served"]["kodim05.png"] = b"<html>moved</html>"
    assert gtd.main(["--root", str(mirror["root"]), "--no-anchors"], fetch=mirror["fetch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("get_test_data: error: ") and err.count("\n") == 1
    assert "kodim05.png" in err and not (mirror["root"] / "data" / "kodak" / "kodim05.png").exists()


def test_a_wrong_file_in_place_is_reported_not_replaced(mirror: dict) -> None:
    wrong = mirror["root"] / "anchors" / "kodak" / "vtm.json"
    wrong.parent.mkdir(parents=True)
    wrong.write_text("{}")
    with pytest.raises(gtd.FetchError, match=r"vtm\.json exists but"):
        gtd.get_anchors(mirror["root"], mirror["fetch"])
    assert wrong.read_text() == "{}"


def _zip(pngs: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in pngs.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_clic_is_extracted_and_checked_when_a_checksum_is_given(
    shared: Path, tmp_path: Path
) -> None:
    png = (shared / "data" / "kodak" / "kodim01.png").read_bytes()
    archive = _zip({"valid/a.png": png, "valid/b.png": png, "__MACOSX/valid/._a.png": b"x"})
    fetch: Callable[[str, Path], None] = lambda url, dest: dest.write_bytes(archive)  # noqa: E731
    said: list[str] = []
    assert gtd.get_clic(tmp_path, fetch, say=said.append) == 2
    assert sorted(p.name for p in (tmp_path / "data" / "clic" / "valid").iterdir()) == [
        "a.png",
        "b.png",
    ]
    assert gtd.sha256(archive) in said[0]
    with pytest.raises(gtd.FetchError, match="differs from --clic-sha256"):
        gtd.get_clic(tmp_path / "other", fetch, expected_sha256="0" * 64, say=said.append)
    assert not (tmp_path / "other").exists()


def test_fetch_url_reads_file_urls(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"\x00\x01data")
    target = tmp_path / "target.bin"
    gtd.fetch_url(source.as_uri(), target)
    assert target.read_bytes() == b"\x00\x01data"
    with pytest.raises(gtd.FetchError, match="cannot download"):
        gtd.fetch_url((tmp_path / "missing").as_uri(), target, attempts=1)
