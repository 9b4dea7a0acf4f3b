"""A command's own start-up: CompressAI's image-codec modules without its package-wide imports.

``import compressai`` (which any ``import compressai.<submodule>`` runs first) imports every
subpackage: its point-cloud datasets and models pull in torch_geometric (which imports
``torch._dynamo`` and ``torch._inductor``), pandas and torchvision, and the registry builds a
table of every torchvision and torch_geometric transform; ``compressai.entropy_models`` imports
``scipy.stats`` for one quantile that only ``GaussianConditional.update`` evaluates. Together
that is about 2.3 s of a 1×1 ``lae-vbr compress`` on a 2-core machine, longer than the rest of
the command after ``import torch``. This package needs none of it: it uses the layers, entropy
models, ``CompressionModel``, the rANS coder and the model registry.

Nothing happens on import: the library imports CompressAI as it is, with every registry
complete. A command (``lae-vbr``, whose process runs nothing else) may call
:func:`import_compressai_lean` before its first CompressAI import; that loads ``compressai``
and ``compressai.registry`` from their own files but executes their
``__init__`` without the statements that import those subpackages (``from compressai import
datasets, ..., zoo`` and ``from .transforms import ...``): each name they would bind is
imported on first attribute access instead (``compressai.zoo``, ``compressai.registry.TRANSFORMS``
and ``import compressai.datasets`` work as before, a moment later). ``scipy`` and ``scipy.stats``
are stand-ins while ``compressai.entropy_models`` is imported, so that module's ``scipy`` name
imports SciPy when ``update`` first needs it; the stand-ins leave ``sys.modules`` right after.

Nothing changes when CompressAI is already imported (the full package is kept), and if this
CompressAI's files do not have the expected shape, or anything here fails, CompressAI is
imported normally: the worst case is the old start-up time, never a different behaviour.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["compressai_is_lean", "import_compressai_lean"]

#: Per package: the ``from MODULE import …`` statements of its ``__init__`` that are deferred,
#: as (MODULE as written there, its number of leading dots).
_DEFERRED = {"compressai": ("compressai", 0), "compressai.registry": ("transforms", 1)}
#: Imported while the stand-ins below are in place.
_ENTROPY_MODELS = "compressai.entropy_models"
_STAND_INS = ("scipy", "scipy.stats")

#: Whether CompressAI was imported the lean way in this process.
_LEAN = False


class _ImportOnUse(types.ModuleType):
    """Stands for module ``name`` and imports it on first attribute access."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        try:
            return getattr(module, attr)
        except AttributeError:
            return importlib.import_module(f"{self.__name__}.{attr}")


def _deferred_names(package: str, tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """Remove the deferred imports from ``tree``; what each bound name imports: (module,
    attribute), attribute None when the name is a submodule of ``package`` itself."""
    deferred: dict[str, tuple[str, str | None]] = {}
    kept = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module, node.level) == _DEFERRED[package]:
            source = node.module if node.level == 0 else f"{package}.{node.module}"
            for alias in node.names:
                attr = None if source == package else alias.name
                name = f"{package}.{alias.name}" if attr is None else source
                deferred[alias.asname or alias.name] = (name, attr)
        else:
            kept.append(node)
    if not deferred or len(kept) == len(tree.body):
        raise ImportError(f"{package}/__init__.py has no deferrable import")
    tree.body = kept
    return deferred


def _module_getattr(package: str, deferred: dict[str, tuple[str, str | None]]) -> Callable:
    """The module-level ``__getattr__`` (PEP 562) that imports a deferred name on use."""

    def lookup(attr: str) -> Any:
        if attr not in deferred:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        name, item = deferred[attr]
        module = importlib.import_module(name)
        value = module if item is None else getattr(module, item)
        setattr(sys.modules[package], attr, value)
        return value

    return lookup


def _load_lean(package: str) -> types.ModuleType:
    """``package`` from its own files, its ``__init__`` run without the deferred imports."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None or spec.loader is None:
        raise ImportError(f"cannot find {package}")
    tree = ast.parse(spec.loader.get_source(package) or "", spec.origin)
    deferred = _deferred_names(package, tree)
    module = importlib.util.module_from_spec(spec)
    module.__getattr__ = _module_getattr(package, deferred)  # type: ignore[attr-defined]
    module.__dir__ = lambda: sorted({*vars(module), *deferred})  # type: ignore[attr-defined]
    sys.modules[package] = module
    exec(compile(tree, spec.origin, "exec"), vars(module))
    return module


@contextmanager
def _stand_ins(names: tuple[str, ...]) -> Iterator[None]:
    """Import-on-use stand-ins in ``sys.modules`` for the modules not yet imported."""
    placed = {name: _ImportOnUse(name) for name in names if name not in sys.modules}
    sys.modules.update(placed)
    try:
        yield
    finally:
        for name, stand_in in placed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


def compressai_is_lean() -> bool:
    """Whether :func:`import_compressai_lean` imported CompressAI in this process."""
    return _LEAN


def import_compressai_lean() -> bool:
    """Import CompressAI the lean way unless it is already imported (see the module doc);
    whether it was. For a command's process only: its registries stay incomplete until the
    deferred subpackages are used."""
    global _LEAN
    if "compressai" in sys.modules:
        return _LEAN
    before = set(sys.modules)
    try:
        for package in _DEFERRED:
            _load_lean(package)
        with _stand_ins(_STAND_INS):
            importlib.import_module(_ENTROPY_MODELS)
    except Exception:  # any surprise: forget the partial import and import it normally
        for name in set(sys.modules) - before:
            if name == "compressai" or name.startswith("compressai."):
                del sys.modules[name]
        importlib.import_module("compressai")
        return False
    _LEAN = True
    return True
