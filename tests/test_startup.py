"""Start-up cost of the codec: what importing it pulls in (each check in a fresh interpreter).

Timing is measured by ``experiments/bench/bench_startup.py``, not here: these tests pin the
causes (which modules a plain ``lae-vbr compress`` imports), which do not depend on the load
of the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Imported by a full ``import compressai`` but never needed to code an image.
HEAVY = (
    "compressai.datasets",
    "compressai.zoo",
    "compressai.registry.transforms",
    "torch_geometric",
    "torch._dynamo",
    "torchvision",
    "scipy",
    "scipy.stats",
    "pandas",
    "hydra",
)


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object, returned here."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_codec_imports_without_the_heavy_packages() -> None:
    out = _run(
        "import json, sys\n"
        "import lae_vbr.codec.cli, lae_vbr.codec.image_codec, lae_vbr.codec.images\n"
        "from lae_vbr.models import _lean_compressai\n"
        f"print(json.dumps([_lean_compressai.LEAN, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    assert out == [True, []]


def test_lean_compressai_still_offers_the_whole_package() -> None:
    """Deferred subpackages and names load on first use; the registry is complete."""
    out = _run(
        "import json\n"
        "import lae_vbr.models\n"
        "import compressai, compressai.zoo\n"
        "from compressai.registry import MODELS, TRANSFORMS\n"
        "from compressai.entropy_models import GaussianConditional\n"
        "import scipy.stats\n"
        "print(json.dumps({'models': sorted(MODELS), 'coder': compressai.get_entropy_coder(),\n"
        "    'dir': 'datasets' in dir(compressai), 'transforms': 'RandomCrop' in TRANSFORMS,\n"
        "    'zoo': hasattr(compressai.zoo, 'image_models'),\n"
        "    'datasets': hasattr(compressai.datasets, 'ImageFolder'),\n"
        "    'scipy': hasattr(scipy.stats, 'norm'),\n"
        "    'quantile': GaussianConditional._standardized_quantile(0.5)}))"
    )
    full = _run(
        "import json, compressai, lae_vbr.models\n"
        "from compressai.registry import MODELS\n"
        "print(json.dumps(sorted(MODELS)))"
    )
    assert out.pop("models") == full and "tcm-vbr" in full
    assert out == {
        "coder": "ans",
        "dir": True,
        "transforms": True,
        "zoo": True,
        "datasets": True,
        "scipy": True,
        "quantile": 0.0,
    }


@pytest.mark.parametrize("first", ["import compressai", "pass"])
def test_compressai_imported_first_or_unexpected_is_imported_normally(first: str) -> None:
    """Already imported: kept as it is; a failure of the lean import: a normal import."""
    out = _run(
        "import importlib.util, json, sys\n"
        f"{first}\n"
        "importlib.util.find_spec = lambda *args: None\n"  # (the import system does not use it)
        "import lae_vbr.models\n"
        "from lae_vbr.models import _lean_compressai\n"
        "print(json.dumps([_lean_compressai.LEAN, 'compressai.datasets' in sys.modules]))"
    )
    assert out == [False, True]


def test_a_command_runs_without_the_cyclic_collector(monkeypatch, tmp_path) -> None:
    """Paused for the command (its collections over torch's objects cost 0.3 s of a small
    compress), restored afterwards, also when the command fails."""
    import gc

    from lae_vbr.codec import cli

    seen = []

    def spy(args) -> int:
        seen.append(gc.isenabled())
        raise cli.UsageError("stop here")

    monkeypatch.setattr(cli, "_info", spy)
    junk = tmp_path / "x.lae"
    junk.write_bytes(b"")
    assert gc.isenabled()
    assert cli.main(["info", str(junk)]) == cli.USAGE
    assert seen == [False] and gc.isenabled()
