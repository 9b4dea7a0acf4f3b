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
from PIL import Image

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


def test_a_compress_command_imports_without_the_heavy_packages(tmp_path) -> None:
    image = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (90, 120, 200)).save(image)
    out = _run(
        "import json, sys\n"
        "from lae_vbr.cli import main\n"
        "from lae_vbr.lean_imports import compressai_is_lean\n"
        f"code = main(['compress', {str(image)!r}, {str(tmp_path / 'one.lae')!r}, "
        "'--quality', '2'])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps([code, compressai_is_lean(), heavy]))"
    )
    assert out == [0, True, []]


#: CompressAI's registries, as a process sees them (names only).
_REGISTRIES = (
    "from compressai.registry import CRITERIONS, DATASETS, MODELS, OPTIMIZERS, TRANSFORMS\n"
    "print(json.dumps([sorted(r) for r in (CRITERIONS, DATASETS, MODELS, OPTIMIZERS, "
    "TRANSFORMS)]))"
)


def test_importing_the_library_leaves_compressai_as_it_is() -> None:
    """``import lae_vbr.models`` first: every CompressAI registry as complete as without it,
    plus the project's own models."""
    ours = _run(f"import json\nimport lae_vbr.models, lae_vbr.codec.image_codec\n{_REGISTRIES}")
    plain = _run(f"import json\nimport compressai\n{_REGISTRIES}")
    criterions, datasets, models, optimizers, transforms = ours
    assert [criterions, datasets, optimizers, transforms] == [plain[0], plain[1], *plain[3:]]
    assert criterions and datasets and "ssf2020" in models
    assert sorted(set(models) - set(plain[2])) == ["tcm", "tcm-vbr"]


def test_lean_compressai_still_offers_the_whole_package() -> None:
    """Deferred subpackages and names load on first use; the registry is complete."""
    out = _run(
        "import json\n"
        "from lae_vbr.lean_imports import import_compressai_lean\n"
        "assert import_compressai_lean()\n"
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
        "from lae_vbr.lean_imports import import_compressai_lean\n"
        "lean = import_compressai_lean()\n"
        "import lae_vbr.models\n"
        "print(json.dumps([lean, 'compressai.datasets' in sys.modules]))"
    )
    assert out == [False, True]


def test_a_command_runs_without_the_cyclic_collector(monkeypatch, tmp_path) -> None:
    """Paused for the command (its collections over torch's objects cost 0.3 s of a small
    compress), restored afterwards, also when the command fails."""
    import gc

    from lae_vbr import cli
    from lae_vbr.cli import commands, terminal

    seen = []

    def spy(args) -> int:
        seen.append(gc.isenabled())
        raise terminal.UsageError("stop here")

    monkeypatch.setattr(commands, "info", spy)
    junk = tmp_path / "x.lae"
    junk.write_bytes(b"")
    assert gc.isenabled()
    assert cli.main(["info", str(junk)]) == cli.USAGE
    assert seen == [False] and gc.isenabled()
