"""How the package's modules depend on each other: no import cycle, no private name imported
from another module, the codec layer asking the model instead of reading its parts, and CLI
modules small enough to read in one sitting. Read from the source (ast), so the checks see
imports inside functions too."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lae_vbr"

#: Model internals the coding layer must not touch (it asks the model's analysis instead).
MODEL_INTERNALS = ("g_a", "g_s", "latent_codec", "modnet_ga", "modnet_gs")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped |= {id(sub) for stmt in node.body for sub in ast.walk(stmt)}
    return skipped


def _imports(name: str, tree: ast.Module, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import the module runs, anywhere
    (inside functions too; not those only for type checkers)."""
    base = name.split(".") if is_package else name.split(".")[:-1]
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[: len(base) - node.level + 1]
                module = ".".join([*parts, node.module] if node.module else parts)
            else:
                module = node.module or ""
            yield module, [alias.name for alias in node.names]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        for module, names in _imports(name, tree, is_package):
            targets = [module, *(f"{module}.{n}" for n in names)]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules (a package's ``__init__`` excluded as an importer of
    its own submodules, which Python resolves), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodule
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph()
    # a submodule importing its package's __init__ is how re-exports work, not a cycle
    pruned = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert _cycle(pruned) is None


def _own_private_module(module: str, name: str) -> bool:
    """Whether ``name`` is a private submodule (e.g. a C extension) of package ``module``."""
    folder = PACKAGE.parent / module.replace(".", "/")
    return any(folder.glob(f"{name}.*"))


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = []
    for name, tree in _modules().items():
        is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        for module, names in _imports(name, tree, is_package):
            private = [
                n
                for n in names
                if n.startswith("_")
                and not n.startswith("__")
                and not _own_private_module(module, n)
            ]
            if module.startswith("lae_vbr") and private:
                offenders.append(f"{name}: from {module} import {', '.join(private)}")
    assert offenders == []


def test_the_codec_layer_asks_the_model_instead_of_reading_its_parts() -> None:
    offenders = []
    for path in (PACKAGE / "codec").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in MODEL_INTERNALS:
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_command_line_modules_are_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "cli").glob("*.py")}
    assert sizes and max(sizes.values()) <= 300, sizes
