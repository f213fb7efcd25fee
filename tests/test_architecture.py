"""The structure facts the README's "Architecture" section promises, read from the code itself:
no import circles (imports inside functions included), no private name imported across
packages, modules of at most 600 lines and functions of at most 60, except where a comment
on the function's first line says why."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
LONG_OK = "# long:"  # on a function's `def` line (or the line after it): why it may be longer


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "stillroom").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, name: str, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file, wherever it is;
    TYPE_CHECKING-only imports are left out (they never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [a.name for a in node.names]
            for n in names:  # `from pkg import module` imports the module
                if f"{base}.{n}" in known:
                    found.append((f"{base}.{n}", []))
            found.append((base, names))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return [(m, ns) for m, ns in found if m in known and m != name]


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        # importing a.b.c runs a and a.b first; a package's __init__ is its own module
        edges[name] = {m for m, _ in imports(path, name, known)}
    return edges


def test_no_import_circles() -> None:
    edges = graph()
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    # a package's __init__ re-exporting its own modules is not a circle between files
    circles = [c for c in circles if not all(m.startswith(c[0] + ".") for m in c[1:-1])]
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def top_package(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2])


def test_no_private_name_crosses_packages() -> None:
    known = modules()
    crossing = []
    for name, path in known.items():
        for module, names in imports(path, name, known):
            if top_package(module) == top_package(name):
                continue
            crossing += [f"{name} imports {module}.{n}" for n in names if n.startswith("_")]
    assert not crossing, "\n".join(crossing)


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            length = (node.end_lineno or node.lineno) - start + 1
            head = "\n".join(lines[node.lineno - 1 : node.lineno + 1])
            if length > MAX_FUNCTION_LINES and LONG_OK not in head:
                too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
