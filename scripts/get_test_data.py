#!/usr/bin/env python3
"""Download the public test material into the layout the tests read, and verify it.

    python scripts/get_test_data.py                 # into $LAE_VBR_SHARED or ../shared
    python scripts/get_test_data.py --root DIR      # elsewhere (then LAE_VBR_SHARED=DIR)
    python scripts/get_test_data.py --clic          # also CLIC professional validation

What it writes (files already present and correct are kept, so a rerun is cheap):

* ``data/kodak/kodim01.png`` … ``kodim24.png``: the Kodak set from https://r0k.us/graphics/kodak/
  (released by Kodak for unrestricted use). Each file is checked against a pinned SHA-256; a
  file whose bytes differ but whose pixels are the same image (another PNG encoder) is
  accepted by a pinned SHA-256 of its decoded RGB pixels (needs Pillow).
* ``anchors/kodak/*.json``: published Kodak R-D curves in CompressAI's results format: the
  files of CompressAI's ``results/image/kodak`` at a pinned commit (BSD 3-Clause Clear), and
  ``tcm-{small,middle,large}-paper.json`` made from LIC_TCM's ``RD_data.md`` (MIT) at a pinned
  commit; all checked against pinned SHA-256 values.
* with ``--clic``: ``data/clic/valid/*.png`` from CLIC's ``professional_valid_2020.zip``. No
  checksum is pinned for it (it could not be downloaded when this script was written); the
  archive's SHA-256 is printed, and ``--clic-sha256 HEX`` makes a mismatch an error.

The training photos and the reference-implementation fixtures that some tests also read are
not public; tests that need them say so when they are absent.

Standard library only (Pillow optional), so it runs before the package is installed. Exit
codes: 0 done, 1 a download or checksum failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

#: ``fetch(url, destination)``: write the resource at ``url`` to the file ``destination``.
Fetch = Callable[[str, Path], None]

KODAK_URL = "https://r0k.us/graphics/kodak/kodak/{name}"
#: name -> (SHA-256 of the file, SHA-256 of "<width>x<height>\n" + its RGB pixels)
KODAK = {
    "kodim01.png": (
        "6b4fbe6f3e8e0e20150d5b0c32248bf072e22b5989d415f96f796c5b7004a70f",
        "971faf78865a68afe1ec69e9346ff25699107f11b2915da9bd1364a43a11fb4e",
    ),
    "kodim02.png": (
        "1788370471429d992750a09caf6702ac74e56962447de02520d4b161738c0369",
        "03f24c91ddc11162693311d7929573fed737539d641586d0e51217933e293c7c",
    ),
    "kodim03.png": (
        "b9c800ee568f0b18c983817df08d9f7f24a7ddb3abfdc31bde9234c4fde83137",
        "a475f0d07b74f45e2b42090586149105c9de8716cc4bd5949ebd0aa2bfdb6540",
    ),
    "kodim04.png": (
        "0c60c62599ad33fd78b29c36013fbe4120946f6c327c0ef0ec6983297fb48d23",
        "a01c5c6fcc78e1bfbd538851dd5940b7e8c3acb5bf2b7b9d3d9ab9ebe0c91a25",
    ),
    "kodim05.png": (
        "ccf694ceb6bbf431e0009ed0d5573a8ff0915095b69ddfb527b91d8325897f5e",
        "3b34d1a99328cfd416617ec497fa7045146aa9a9f2bde0c48094154beb712d31",
    ),
    "kodim06.png": (
        "f4212cc927d1d579c712843cf8320c7eccb571e5ea80456022ffe99d67e9cd5d",
        "72fc69709e475b52425103aabd9f616e9237308c32cef44de29e767dc02666ba",
    ),
    "kodim07.png": (
        "7cdd6d63ae0a245f6f9d983d740e11c6808c2efc24f8351aad9b5f676c27b55a",
        "6c3374a67db3070369e77a8267435b4e6a1f5d53094ef47ceaa1160554e4b156",
    ),
    "kodim08.png": (
        "5a6a089bdb47605287c00d89ebf2a5312981eb998c94b5853d917c93a9066cdb",
        "0fa94c58dc897263ae0d0f452afad0223f8bedbbee28aa51763e17ec6d4e4f7a",
    ),
    "kodim09.png": (
        "4d8d801592aeaf446978bbd1c83b76c498242d0f684769311a4e7248289500bf",
        "f9989a8056e2067f5a8c47606c14ff8c2af2667b5aec6007b1c1115396ec37bc",
    ),
    "kodim10.png": (
        "7aca487dc83db732a5690b7affe8558e9dadf5bb44a4589ba2b607480a07228b",
        "29bf437f78788a4c2f264e840cbe6ca0d1a2fcb3b198c090f363b513b4d5665c",
    ),
    "kodim11.png": (
        "c7c02bd6e942d1181518e3ce2d97cf0451e4494a5e9d6ddee276940e4875d746",
        "d9215d85c57d74c02a44327afcaaa5b82e918bfb3f1e2ce6dad83119bc7f2026",
    ),
    "kodim12.png": (
        "df571f5e66d1aefd764ea77855e81e3be61528c34962a0fd1d50557502162c1e",
        "e1743e487bfea35e6049aa34d757ee2798aa952322e1c40b2258fdfc61878730",
    ),
    "kodim13.png": (
        "797949ce1152ef157ff0a1231c95cb8ed7641615e0b0f5f77f851a44aee19e8d",
        "c6b887e1c41ce61808da64bd84d67b684f5807670a778705f21b403d3f44f7ce",
    ),
    "kodim14.png": (
        "08a1898d5702f32e7d9f94a94651d74a62cb9325475775a558b388c8d98f1846",
        "967bdc5b648a8a4cb6622be0cd78cb1b62a9f6418d3802232af07d10b19469bc",
    ),
    "kodim15.png": (
        "416c475f39b0eb9203ce7f77d2af8824f5bffc1a86a4605865017f04c41639b9",
        "e672aae9be975ccde752a239ef7602df14cebfdf89535540a3c906c1a7bd17b2",
    ),
    "kodim16.png": (
        "5d03303693decdf7a1e1e930b5ca6684283aa80a9e7d8d6a842a74fa5f790640",
        "222917ebb1f94fa52621d0ed5445b628271899eac7c84e145907288d8587e20f",
    ),
    "kodim17.png": (
        "19d90e98e5835efae20a6e17e22e5ac6814ee2c8efb32d188ea4359abaf9f5bd",
        "ce6ec4937d36c946c5634d223be578acf974e14d7f32901a9d3ec4fc34c2b2e4",
    ),
    "kodim18.png": (
        "83df267dfec61e9b9d3756c422502160b2fab595650c73a8b12940540ad09ec5",
        "2b89789acb3f86edf320ff9405b02f4773aa693fc7da05a7515edf778ac8736e",
    ),
    "kodim19.png": (
        "86560efe85a13413b228ef7e42dde0d439b25a94fb8e2d6fb1dc1631cf48853b",
        "fbb13f7312170389b08fa55ca2ef92824223e5c0d397ad8311db7beb2ffe6f55",
    ),
    "kodim20.png": (
        "1ae187d92b3a4483b6717f7fd08592846ffdfc340c6424f6756627a27f3d8ea7",
        "15efee1bf3afd70324ce7c9227baf92d53699f6a68bbac71d7264a8c3ae373f1",
    ),
    "kodim21.png": (
        "26e193795108c4b5ec47206ae4ff07a353d2492947f7a7ae8d380e042b74027b",
        "5c4ca070ecf42493be4132c04b871cd5c1b8b8520930aeb1f7896de38ccb9020",
    ),
    "kodim22.png": (
        "627b76fccf714b4ddffb739b2eb63ba2817cf5b5a8e222079542dcf2cfdda939",
        "117b4e812946eeb8ca5fcd3a5e9ab996a0db889665cb6759b75b47c0768032b8",
    ),
    "kodim23.png": (
        "85c67d7ea758cb0604fb6980ab0c65091a2eefa7b3b50cbb1bc702a60206dfe5",
        "4fe9aa0f46deddf005faafaef4b7558a1b80ec3653c153019414573f2f5f1c0f",
    ),
    "kodim24.png": (
        "9f1c26df52217bd49f998a720a2ffeba41a535cf826f4ae32e355fb2b0bbc0fe",
        "964728fb161c5182cb6388e7c26b96b91ea1f5c8a87617c4b1ec30c4c67c166a",
    ),
}

COMPRESSAI_COMMIT = "869a9f5d4126d015b7de8f203fe60ee9e1608193"
COMPRESSAI_URL = (
    "https://raw.githubusercontent.com/InterDigitalInc/CompressAI/"
    f"{COMPRESSAI_COMMIT}/results/image/kodak/{{name}}"
)
#: CompressAI's published Kodak curves the evaluation uses as anchors: name -> SHA-256
COMPRESSAI_ANCHORS = {
    "av1.json": "f546640c2c9cf3b2734480fb66a6ceae18bd7c4817a8cfd69cd90adeafb2f805",
    "bmshj2018-hyperprior-vbr-ans.json": (
        "37d50cba229fd77caf6767382436a34d013c0915548ddea86473da0c6c79453c"
    ),
    "bpg_444_x265_ycbcr.json": "532fd0ad11e75971a7e8015386576aae9413197bbd02262406a57525280e1e8c",
    "compressai-bmshj2018-hyperprior_mse_cpu.json": (
        "d0ddd8fa8500f95b934872cf9ce0a832082c171c20b2d9e9cd4bdb103b3c3fee"
    ),
    "compressai-cheng2020-anchor_mse_cpu.json": (
        "9f21917bace6067dc47ba7e994d104511bdbd4af20aff2339d6d2efe2d857474"
    ),
    "compressai-cheng2020-attn_mse_cpu.json": (
        "b7a515a9df3c8e2283019eebc74a9e70119b67b96c85df93a32cde242639642a"
    ),
    "compressai-mbt2018-mean_mse_cpu.json": (
        "8866c86584cba603d571a29d9419ce3ab13412d96ddb73ad96a7a89abc2e38dd"
    ),
    "compressai-mbt2018_mse_cpu.json": (
        "52d74e70f1c9b61e7c9daee75672956b8719c59e0f4bceef39635a39cd81dee3"
    ),
    "hm.json": "30744a5760eddd146f338de1fbcebf59af86aa98487a6b8f328bb7cdc0739326",
    "jpeg.json": "e97f3a4474179fceb1759cf17767dc040a7e546f7b8f0b832f5471a78d3275c4",
    "jpeg2000.json": "1b00739bf25a7c7a4550912a13a322b52eebfee76afc72ca516289b293212e22",
    "mbt2018-mean-vbr-ans.json": "fb66ce745e87874943d6b7086add50c025093397656b982d1c08e9e5db0c4c9b",
    "mbt2018-vbr-ans.json": "621a7ecbdfbd8bed37ea1dfc2ac8a1010c8870ab0bb8c056da418fb698d90c29",
    "paper-elic2022_mse.json": "b35921600d645a5e65edb975d270c3544e2fb2708ae167ca32da85c7c13ecd50",
    "paper-minnen2020-cc10_mse.json": (
        "d05689335855787ee350c042a0e17e1662e31a5c2d432a3166ba7f4e31a09988"
    ),
    "vtm.json": "b09a8dd2b9ae98bfbf7c60a14c752ba6a925f4eba87490c41e6b36374b62ee01",
    "webp.json": "7e35be7e2db9d57027a09e774f58a71fd5c7095802c230d4bb16fd97a206d6dc",
}

LIC_TCM_COMMIT = "6c6d7a364817a4c372bd210dbbcb175f9172caa0"
RD_DATA_URL = f"https://raw.githubusercontent.com/jmliu206/LIC_TCM/{LIC_TCM_COMMIT}/RD_data.md"
RD_DATA_SHA256 = "88a157ab5186ab0786efe82d0742f8a0c01b9cfc4d6cfd167d43827834b6e1ed"
#: the anchors made from RD_data.md's Kodak sections: name -> SHA-256 of the JSON written
TCM_ANCHORS = {
    "tcm-large-paper.json": "bee8ff6c6c517e8b9055a8fd8c60bb93e4a07ecae32d0ebbbd0ddc4103144707",
    "tcm-middle-paper.json": "66b98ed3e43951af091308ff71591b22822809e9b02cee9ea689de061687059b",
    "tcm-small-paper.json": "8c332beb5daaee0c642a8b21857650f14602112a74559214238b096329d71fca",
}

CLIC_URL = "https://data.vision.ee.ethz.ch/cvl/clic/professional_valid_2020.zip"


class FetchError(Exception):
    """A download or verification that failed; the message is printed as one line."""


# -- fetching and checking -------------------------------------------------------------------
def fetch_url(url: str, destination: Path, attempts: int = 3, timeout: float = 60.0) -> None:
    """Download ``url`` to ``destination`` (http(s) or file://), retrying transient errors."""
    for attempt in range(1, attempts + 1):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "lae-vbr-test-data"})
            with (
                urllib.request.urlopen(request, timeout=timeout) as response,
                open(destination, "wb") as out,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            return
        except OSError as err:  # URLError, HTTPError and timeouts are all OSErrors
            if attempt == attempts:
                raise FetchError(f"cannot download {url}: {err}") from None
            time.sleep(2.0 * attempt)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixel_sha256(data: bytes) -> str | None:
    """SHA-256 of an image's size and RGB pixels; None without Pillow or for a non-image."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except Exception:  # not an image Pillow reads: it cannot match
        return None
    return sha256(f"{rgb.width}x{rgb.height}\n".encode() + rgb.tobytes())


def kodak_problem(name: str, data: bytes) -> str | None:
    """Why ``data`` is not the Kodak image ``name`` (None: it is)."""
    file_digest, pixel_digest = KODAK[name]
    if sha256(data) == file_digest:
        return None
    pixels = pixel_sha256(data)
    if pixels == pixel_digest:
        return None
    if pixels is None and not _has_pillow():
        return "its SHA-256 differs (install Pillow to compare its pixels instead)"
    return "neither its SHA-256 nor its pixels match the pinned Kodak image"


def _has_pillow() -> bool:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def _download(url: str, fetch: Fetch) -> bytes:
    with tempfile.TemporaryDirectory(prefix="lae-vbr-data-") as folder:
        target = Path(folder) / "download"
        fetch(url, target)
        return target.read_bytes()


# -- the sets ----------------------------------------------------------------------------------
def get_kodak(root: Path, fetch: Fetch = fetch_url, say: Callable[[str], None] = print) -> int:
    """Kodak into ``root/data/kodak``; returns how many files were downloaded."""
    folder = root / "data" / "kodak"
    fetched = 0
    for name in KODAK:
        path = folder / name
        if path.is_file():
            problem = kodak_problem(name, path.read_bytes())
            if problem:
                raise FetchError(f"{path} exists but {problem}; move it away and run again")
            continue
        url = KODAK_URL.format(name=name)
        data = _download(url, fetch)
        problem = kodak_problem(name, data)
        if problem:
            raise FetchError(f"{url}: {problem}; nothing was written for it")
        _write_atomic(path, data)
        fetched += 1
    say(f"kodak: {len(KODAK)} images in {folder} ({fetched} downloaded, all verified)")
    return fetched


def tcm_anchors(rd_data: str) -> dict[str, bytes]:
    """The three TCM curves of LIC_TCM's RD_data.md (Kodak sections) as results JSONs."""
    files = {}
    for size in ("Large", "Middle", "Small"):
        section = re.search(rf"# {size}\s*\n## Kodak\s*\n(.*?)(?=\n## |\n# |\Z)", rd_data, re.S)
        if section is None:
            raise FetchError(f"RD_data.md has no Kodak section for {size}")
        psnr = _numbers(section.group(1), "PSNR")
        bpp = _numbers(section.group(1), "Bitrate")
        name = f"tcm-{size.lower()}-paper"
        curve = {
            "name": name,
            "description": "LIC_TCM RD_data.md (Kodak, MSE models, lambda 0.0025..0.05)",
            "results": {"bpp": bpp, "psnr-rgb": psnr},
        }
        files[f"{name}.json"] = json.dumps(curve, indent=2).encode()
    return files


def _numbers(text: str, key: str) -> list[float]:
    match = re.search(rf"{key}\s*=\s*\[([^\]]*)\]", text)
    if match is None:
        raise FetchError(f"RD_data.md: no {key} list")
    return [float(v) for v in match.group(1).split(",")]


def get_anchors(root: Path, fetch: Fetch = fetch_url, say: Callable[[str], None] = print) -> int:
    """The published curves into ``root/anchors/kodak``; returns how many files were written."""
    folder = root / "anchors" / "kodak"
    wanted = {**COMPRESSAI_ANCHORS, **TCM_ANCHORS}
    missing = [n for n, digest in wanted.items() if _digest_of(folder / n) != digest]
    for name in missing:
        if (folder / name).is_file():
            raise FetchError(f"{folder / name} exists but its SHA-256 differs; move it away")
    files: dict[str, bytes] = {}
    for name in (n for n in missing if n in COMPRESSAI_ANCHORS):
        files[name] = _download(COMPRESSAI_URL.format(name=name), fetch)
    if any(n in TCM_ANCHORS for n in missing):
        rd_data = _download(RD_DATA_URL, fetch)
        if sha256(rd_data) != RD_DATA_SHA256:
            raise FetchError(f"{RD_DATA_URL}: SHA-256 differs from the pinned one")
        made = tcm_anchors(rd_data.decode("utf-8"))
        files |= {n: data for n, data in made.items() if n in missing}
    for name, data in files.items():
        if sha256(data) != wanted[name]:
            raise FetchError(f"anchor {name}: SHA-256 differs from the pinned one; not written")
        _write_atomic(folder / name, data)
    say(f"anchors: {len(wanted)} curves in {folder} ({len(files)} downloaded, all verified)")
    return len(files)


def _digest_of(path: Path) -> str | None:
    return sha256(path.read_bytes()) if path.is_file() else None


def get_clic(
    root: Path,
    fetch: Fetch = fetch_url,
    expected_sha256: str | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """CLIC professional validation PNGs into ``root/data/clic/valid``; returns their number."""
    folder = root / "data" / "clic" / "valid"
    with tempfile.TemporaryDirectory(prefix="lae-vbr-clic-") as tmp:
        archive = Path(tmp) / "clic.zip"
        fetch(CLIC_URL, archive)
        digest = hashlib.sha256()
        with open(archive, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        say(f"clic: {CLIC_URL} has SHA-256 {digest.hexdigest()}")
        if expected_sha256 and digest.hexdigest() != expected_sha256.lower():
            raise FetchError(f"{CLIC_URL}: SHA-256 differs from --clic-sha256; nothing was written")
        count = _extract_pngs(archive, folder)
    say(f"clic: {count} images in {folder}")
    return count


def _extract_pngs(archive: Path, folder: Path) -> int:
    """Every PNG of the archive (not macOS metadata) into ``folder``, flat."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = [
                n
                for n in zipped.namelist()
                if n.lower().endswith(".png")
                and "__MACOSX" not in n
                and not Path(n).name.startswith(".")
            ]
            if not names:
                raise FetchError(f"{CLIC_URL}: the archive holds no PNG image")
            for name in names:
                _write_atomic(folder / Path(name).name, zipped.read(name))
    except zipfile.BadZipFile as err:
        raise FetchError(f"{CLIC_URL}: not a zip archive ({err})") from None
    return len(names)


# -- command line ------------------------------------------------------------------------------
def default_root() -> Path:
    """Where the tests look: ``$LAE_VBR_SHARED``, else ``shared/`` beside the repository."""
    env = os.environ.get("LAE_VBR_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download Kodak and the published anchors (and optionally CLIC) into the "
        "layout the tests read, verifying checksums."
    )
    parser.add_argument("--root", type=Path, default=None, help="target folder (default: "
                        "$LAE_VBR_SHARED, else ../shared beside the repository)")  # fmt: skip
    parser.add_argument("--no-anchors", action="store_true", help="Kodak only")
    parser.add_argument("--clic", action="store_true", help="also CLIC professional validation")
    parser.add_argument("--clic-sha256", metavar="HEX", help="expected SHA-256 of the CLIC zip")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, fetch: Fetch = fetch_url) -> int:
    args = parse_args(argv)
    root = (args.root or default_root()).expanduser()
    try:
        get_kodak(root, fetch)
        if not args.no_anchors:
            get_anchors(root, fetch)
        if args.clic:
            get_clic(root, fetch, args.clic_sha256)
    except FetchError as err:
        print(f"get_test_data: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"get_test_data: error: {err}", file=sys.stderr)
        return 1
    print(f"done: point the tests at it with LAE_VBR_SHARED={root} (or keep it at ../shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
