"""The package's shape: data flows one way, and no module reaches up, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cnnprobe"

# Lowest first. A module may import from its own layer or any layer below, never above.
LAYERS = [
    {"enums", "errors", "formatting", "jsonio", "cache", "signals", "search"},
    {"models.catalog", "models.lenet", "models.alexnet", "models.vgg", "models.resnet", "models"},
    {"registry", "inputs"},
    {"pickles"},
    {"meta", "head", "safeload", "statedict", "freezing"},
    {"weights"},
    {"build"},
    {"formulas", "shaperules", "trace", "failures", "steps", "devices", "memtrack", "memory", "allocator", "workspace"},
    {"probe"},
    {"inspect", "flopcount", "transfer", "modeldiff", "checkpoints", "peak", "benchconfig", "benchresult", "blocks"},
    {"runners"},
    {"ddp"},
    {"timing", "predict"},
    {"batchsearch", "launch"},
    {"sweep", "regression"},
    {"render", "output"},
    {"cli", "__init__", "__main__"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every cnnprobe module `name` imports, at module level or inside functions."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                if full in known:
                    out.add(full)
                elif target in known:
                    out.add(target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                full = (module or alias.name)
                if full.startswith("cnnprobe."):
                    out.add(full.removeprefix("cnnprobe."))
    out.discard(name)
    return out


def test_every_module_has_a_layer():
    placed = set().union(*LAYERS)
    assert set(_modules()) == placed, set(_modules()) ^ placed


def test_no_module_imports_from_a_layer_above_it():
    modules = _modules()
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    upward = [(name, target) for name, path in modules.items() for target in _imports(name, path, set(modules))
              if layer[target] > layer[name]]
    assert not upward, f"imports that reach up: {upward}"


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in graph[node]:
            if seen.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path[path.index(nxt):], nxt])}")
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for name in graph:
        if name not in seen:
            visit(name, [name])
