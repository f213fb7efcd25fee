"""The report kit: crash-safe writes, shipped templates, and report modules free of import
circles (including imports hidden inside functions)."""

from __future__ import annotations

import ast
import os
import stat
import tomllib
from pathlib import Path

import jinja2
import pytest

import stillroom
from stillroom.reportkit.figures import Plot, figure_png, new_figure
from stillroom.reportkit.files import atomic_file, write_atomic
from stillroom.reportkit.pages import render

SRC = Path(stillroom.__file__).parent
TEMPLATES = SRC / "reportkit" / "templates"
ROOT = Path(__file__).resolve().parents[2]


def test_write_atomic_takes_text_and_bytes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_atomic(target, "grüße\n")
    assert target.read_bytes() == "grüße\n".encode()
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half of the ne")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_private_files_are_never_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    with atomic_file(target, private=True) as tmp:
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600  # before a byte is written
        tmp.write_text("secret")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomic(tmp_path / "public.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "public.txt").stat().st_mode) == 0o666 & ~umask


def test_figures_are_png_and_inline_as_data_uris() -> None:
    fig = new_figure(2, 1.5)
    fig.subplots().plot([0, 1], [1, 0])
    png = figure_png(fig)
    assert png.startswith(b"\x89PNG") and png == figure_png(fig)  # no timestamp in the bytes
    assert Plot("x", "t", "c", png).data_uri.startswith("data:image/png;base64,iVBOR")


def test_pages_escape_and_refuse_missing_names() -> None:
    html = render("audit.html.j2", **_audit_page(unit="<script>"))
    assert "&lt;script&gt;" in html and "<script>" not in html
    with pytest.raises(jinja2.UndefinedError):
        render("audit.html.j2", **{k: v for k, v in _audit_page().items() if k != "cards"})


def test_every_template_ships_with_the_package() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"]["stillroom.reportkit"]
    files = sorted(p for p in TEMPLATES.rglob("*") if p.is_file())
    assert files
    for p in files:
        assert any(p.relative_to(TEMPLATES.parent).match(pat) for pat in patterns), p


def test_report_modules_have_no_import_circle() -> None:
    """Every import counts, at module level or inside a function: a circle hidden in a
    function is still a circle."""
    graph = _import_graph()
    watched = tuple(f"stillroom.{p}." for p in ("audit", "evaluate", "trace", "demo", "reportkit"))
    for start in graph:
        if start.startswith(watched):
            assert start not in _reachable(graph, start), f"{start} imports itself back"


def _audit_page(unit: str = "u1") -> dict[str, object]:
    card = {"unit": unit, "score": "1.00", "accounts": [unit], "more": ""}
    card |= {"evidence": [], "examples": []}
    return {
        "flagged": 1,
        "units": 1,
        "fpr": "0.001",
        "threshold": "0.50",
        "used": "1",
        "rows": "1",
        "garbage": "0",
        "garbage_kinds": "",
        "cards": [card],
    }


def _import_graph() -> dict[str, set[str]]:
    names = {}
    for path in SRC.rglob("*.py"):
        parts = ("stillroom", *path.relative_to(SRC).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {t for t in found if t in names and t != name}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen
