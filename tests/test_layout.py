"""The package's shape: data flows one way, and no module reaches up, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cnnprobe"

# Lowest first: data flows up this list. A module may import from its own subpackage or any subpackage below
# it, never above. The top-level modules come last.
PACKAGES = ["core", "weights", "models", "trace", "training", "memory", "runtime", "analysis", "benchmark", "report", "cli"]
TOP = {"__init__", "__main__"}


def _layer(module: str) -> int:
    if module in TOP:
        return len(PACKAGES)
    return PACKAGES.index(module.split(".")[0])


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


def test_every_module_sits_in_a_subpackage():
    loose = {m for m in _modules() if m not in TOP and m.split(".")[0] not in PACKAGES}
    assert not loose, f"modules outside the subpackages: {sorted(loose)}"


def test_no_module_imports_from_a_layer_above_it():
    modules = _modules()
    layer = {m: _layer(m) for m in modules}
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


def test_core_needs_no_torch():
    """`core` is what `cnnprobe --help` may import: none of its modules imports torch, even inside a function."""
    heavy = []
    for name, path in _modules().items():
        if name.split(".")[0] != "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            heavy += [(name, n) for n in names if n.split(".")[0] in ("torch", "torchvision", "fvcore", "torchinfo")]
    assert not heavy, heavy


def test_no_subpackage_shadows_a_public_name():
    """`cnnprobe.bench(...)` is the API: a subpackage of the same name would replace it once imported."""
    import cnnprobe

    assert not set(PACKAGES) & set(cnnprobe.__all__)
