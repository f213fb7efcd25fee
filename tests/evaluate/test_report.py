"""The evaluation report: files, embedded figures, tables, and a real render in Chromium."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image as mpimg

from stillroom.evaluate.report import (
    ReportPaths,
    fmt_count,
    fmt_mb,
    fmt_usd,
    headline,
    write_report,
)
from tests.helpers.browser import CHROMIUM, PROBE, chromium, page_images

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = ["animal", "food", "artifact", "person", "plant", "location"]
FIGURES = ["quality_cost", "confusion", "training_curves"]
HEADLINE = "the student keeps 96.1% of the teacher's accuracy at 31x lower cost and 24x the speed"


def _write_log(path: Path, steps: int, kd: bool, seed: int) -> None:
    """A train_log.jsonl as the trainer writes it: a row per step, validation every 20."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for step in range(1, steps + 1):
            row: dict[str, Any] = {"step": step, "epoch": 0, "lr": 5e-4, "tokens_per_s": 900.0}
            row["loss"] = 1.8 * math.exp(-step / 30) + 0.3 + 0.1 * rng.random()
            if step % 20 == 0:
                row["val_ce"] = 1.2 * math.exp(-step / 50) + 0.4
                row["val_accuracy"] = 0.68 - 0.4 * math.exp(-step / 40)
                if kd:
                    row["val_kl"] = 0.8 * math.exp(-step / 40) + 0.1
            f.write(json.dumps(row) + "\n")


def _confusion(accuracy: float, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    rows = []
    for true in range(len(LABELS)):
        row = [0] * len(LABELS)
        for _ in range(60):
            row[true if rng.random() < accuracy else rng.randrange(len(LABELS))] += 1
        rows.append(row)
    return rows


def _efficiency(
    params: int, disk_mb: float, p50: float, per_s: float, rss: float
) -> dict[str, Any]:
    return {
        "params": params,
        "disk_mb": disk_mb,
        "latency_ms_p50": p50,
        "latency_ms_p95": p50 * 1.2,
        "throughput_items_per_s": per_s,
        "batch": 16,
        "peak_rss_mb": rss,
    }


def _make_run(root: Path) -> Path:
    run = root / "runs" / "wordnet-demo"
    _write_log(run / "train_log.jsonl", 120, kd=True, seed=1)
    _write_log(run / "baseline" / "train_log.jsonl", 120, kd=False, seed=2)
    return run


def _make_result() -> dict[str, Any]:
    """An eval.json as `stillroom eval` writes it for a six-label WordNet run."""
    return {
        "run": "wordnet-demo",
        "task": {"kind": "classify", "labels": LABELS, "n_test": 362, "metric": "accuracy"},
        "headline": HEADLINE,
        "models": {
            "teacher": {
                "name": "gemma-3-270m",
                "role": "teacher",
                "quality": {"accuracy": 0.71, "macro_f1": 0.69},
                "fidelity": None,
                "efficiency": _efficiency(268_098_176, 1072.4, 350.0, 2.9, 2100.0),
                "cost_per_1m_requests_usd": 4.8,
            },
            "student": {
                "name": "gemma-3-270m-shrunk-3L",
                "role": "student",
                "quality": {"accuracy": 0.6823, "macro_f1": 0.66},
                "fidelity": {"agreement": 0.9, "kl": 0.12},
                "efficiency": _efficiency(19_400_000, 77.6, 14.2, 70.0, 310.0),
                "cost_per_1m_requests_usd": 0.155,
            },
            "baseline": {
                "name": "gemma-3-270m-shrunk-3L (gold labels)",
                "role": "baseline",
                "quality": {"accuracy": 0.61, "macro_f1": 0.58},
                "fidelity": {"agreement": 0.71, "kl": 0.5},
                "efficiency": _efficiency(19_400_000, 77.6, 14.1, 70.3, 305.0),
                "cost_per_1m_requests_usd": 0.154,
            },
        },
        "confusion": {
            "labels": LABELS,
            "teacher": _confusion(0.7, 1),
            "student": _confusion(0.66, 2),
            "baseline": _confusion(0.58, 3),
        },
        # relative to the project root, which is not the working directory of the test
        "training_logs": {
            "student": "runs/wordnet-demo/train_log.jsonl",
            "baseline": "runs/wordnet-demo/baseline/train_log.jsonl",
        },
        "settings": {
            "cpu_hour_usd": 0.05,
            "machine": "x86_64, 2 cores",
            "command": "stillroom eval examples/wordnet.yaml",
        },
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return _make_run(tmp_path)


@pytest.fixture
def result() -> dict[str, Any]:
    return _make_result()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReportPaths]:
    """One full report, shared by the tests that only read it."""
    run = _make_run(tmp_path_factory.mktemp("report"))
    return run, write_report(run, _make_result())


def _decode_png(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    png = base64.b64decode(uri[len(prefix) :], validate=True)
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    pixels = mpimg.imread(io.BytesIO(png), format="png")  # (H, W, 4) floats
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    return png


def test_writes_every_file(written: tuple[Path, ReportPaths]) -> None:
    run_dir, paths = written
    assert paths["md"] == run_dir / "report.md" and paths["md"].is_file()
    assert paths["html"] == run_dir / "report.html" and paths["html"].is_file()
    assert [p.name for p in paths["plots"]] == [f"{n}.png" for n in FIGURES]
    for path in paths["plots"]:
        assert path.parent == run_dir / "plots"
        assert path.read_bytes().startswith(PNG_MAGIC)
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []  # every temp file was renamed into place


def test_html_is_self_contained_with_one_image_per_figure(
    written: tuple[Path, ReportPaths],
) -> None:
    run_dir, paths = written
    html = paths["html"].read_text(encoding="utf-8")
    page = page_images(html)
    assert page.scripts == 0 and page.external == []
    assert len(page.images) == len(FIGURES)
    for img, name in zip(page.images, FIGURES, strict=True):
        png = _decode_png(img["src"])
        assert png == (run_dir / "plots" / f"{name}.png").read_bytes()
        assert img["alt"]
    assert HEADLINE.replace("'", "&#39;") in html
    assert "<td>19.4M</td>" in html and "<td>$4.80</td>" in html


def test_markdown_has_headline_table_and_figure_links(
    written: tuple[Path, ReportPaths],
) -> None:
    md = written[1]["md"].read_text(encoding="utf-8")
    assert HEADLINE in md
    lines = md.splitlines()
    assert "| | teacher | student | baseline |" in lines
    for row in [
        "| accuracy | 0.710 | 0.682 | 0.610 |",
        "| agreement with teacher | — | 0.900 | 0.710 |",
        "| KL to teacher | — | 0.120 | 0.500 |",
        "| parameters | 268M | 19.4M | 19.4M |",
        "| disk | 1.07 GB | 77.6 MB | 77.6 MB |",
        "| latency p50 / p95 | 350 ms / 420 ms | 14.2 ms / 17 ms | 14.1 ms / 16.9 ms |",
        "| throughput | 2.9 items/s (batch 16) | 70 items/s (batch 16) | 70.3 items/s (batch 16) |",
        "| peak memory | 2.1 GB | 310 MB | 305 MB |",
        "| cost per 1M requests | $4.80 | $0.15 | $0.15 |",
    ]:
        assert row in lines, row
    for name in FIGURES:
        assert f"](plots/{name}.png)" in md
    assert "- command: `stillroom eval examples/wordnet.yaml`" in lines


def test_optional_parts_missing(run_dir: Path, result: dict[str, Any]) -> None:
    """No baseline, no fidelity, a generation task without confusion, no training logs."""
    write_report(run_dir, result)  # a full report first: its stale figures must go
    lean = copy.deepcopy(result)
    del lean["models"]["baseline"], lean["confusion"], lean["training_logs"], lean["headline"]
    lean["task"] = {"kind": "generate", "n_test": 50, "metric": "rouge_l"}
    for model in lean["models"].values():
        model["quality"] = {"rouge_l": model["quality"]["accuracy"]}
        model["fidelity"] = None
    paths = write_report(run_dir, lean)
    assert [p.name for p in paths["plots"]] == ["quality_cost.png"]
    assert sorted(p.name for p in (run_dir / "plots").iterdir()) == ["quality_cost.png"]
    page = page_images(paths["html"].read_text(encoding="utf-8"))
    assert len(page.images) == 1
    _decode_png(page.images[0]["src"])
    md = paths["md"].read_text(encoding="utf-8")
    assert "| | teacher | student |" in md.splitlines()
    assert "baseline" not in md and "agreement" not in md
    assert "the student keeps 96.1% of the teacher's rouge l" in md  # computed headline


def test_missing_and_damaged_training_logs(
    run_dir: Path, result: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Log paths may be relative to the working directory: keep a real runs/ out of it.
    monkeypatch.chdir(run_dir)
    log = run_dir / "train_log.jsonl"
    rows = log.read_text().splitlines()
    # a resumed run repeats steps after its checkpoint; a kill cuts the last line short
    log.write_text("\n".join([*rows[:60], *rows[40:], '{"step": 121, "lo']) + "\n")
    result["training_logs"]["baseline"] = str(run_dir / "nowhere" / "train_log.jsonl")
    paths = write_report(run_dir, result)
    assert "training_curves.png" in [p.name for p in paths["plots"]]
    md = paths["md"].read_text(encoding="utf-8")
    assert "The baseline's training log was not found" in md
    assert "1 unreadable line(s) in the student's training log" in md


def test_html_escapes_what_it_is_given(run_dir: Path, result: dict[str, Any]) -> None:
    del result["confusion"], result["training_logs"]  # one figure is enough here
    result["models"]["student"]["name"] = "<script>alert(1)</script>"
    html = write_report(run_dir, result)["html"].read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_headline_from_the_numbers(result: dict[str, Any]) -> None:
    """An eval.json without a headline: the share kept comes with the teacher's margin over
    chance (1/6 here) and the baseline's score."""
    beside = "(the teacher is 54.3 points above uniform chance, 16.7%; the gold-only baseline "
    kept = "the student keeps 96.1% of the teacher's accuracy " + beside + "scores 0.610)"
    assert headline(result) == kept + " at 31x lower cost and 24x the speed"
    # timed in rounds: the speed is the student's slowest round over the teacher's fastest
    result["models"]["teacher"]["efficiency"] |= {"throughput_min": 2.5, "throughput_max": 3.5}
    result["models"]["student"]["efficiency"] |= {"throughput_min": 52.5, "throughput_max": 80}
    assert headline(result) == kept + " at 31x lower cost and 15x the speed"
    del result["models"]["student"]["efficiency"]
    assert headline(result) == kept + " at 31x lower cost"
    del result["models"]["student"]
    assert headline(result) is None


def test_the_table_shows_the_rounds_spread_and_the_weights(
    run_dir: Path, result: dict[str, Any]
) -> None:
    student = result["models"]["student"]["efficiency"]
    student |= {"throughput_min": 61.0, "throughput_max": 75.5, "passes": 5, "weights_mb": 77.6}
    md = write_report(run_dir, result)["md"].read_text(encoding="utf-8")
    assert "| 70 items/s (batch 16; 61-75.5 over 5 passes) |" in md
    assert "| 310 MB (weights 77.6 MB) |" in md


def test_number_formats() -> None:
    assert [fmt_count(268_098_176), fmt_count(19_400_000), fmt_count(1.2e9)] == [
        "268M",
        "19.4M",
        "1.2B",
    ]
    assert [fmt_usd(4.8), fmt_usd(0.1234), fmt_usd(0.0042), fmt_usd(None)] == [
        "$4.80",
        "$0.12",
        "$0.0042",
        "—",
    ]
    assert [fmt_mb(77.6), fmt_mb(1072.4)] == ["77.6 MB", "1.07 GB"]


# ---------------------------------------------------------------- a real browser


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs headless Chromium at /usr/bin/chromium: apt-get install -y chromium",
)
def test_report_renders_in_headlesschromium(
    written: tuple[Path, ReportPaths], tmp_path: Path
) -> None:
    html_path = written[1]["html"]
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", html_path.as_uri())
    pixels = mpimg.imread(shot)  # (3000, 1200, 3 or 4) floats in [0, 1]
    assert pixels.shape[:2] == (3000, 1200)
    rgb = (pixels[..., :3] * 255).round().astype(np.uint8)

    # The same page plus a script that records, after load, where each image is and
    # whether it decoded; the report itself carries no script.
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", PROBE))
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    images = page_images(dom).images
    assert len(images) == len(FIGURES)
    for img in images:
        assert img["src"].startswith("data:image/png;base64,")
        assert img["data-loaded"] == "true", img["alt"]
        left, top, width, height = map(int, img["data-rect"].split(","))
        assert width > 300 and height > 200, img["alt"]
        assert top + height <= rgb.shape[0], f"{img['alt']} is below the screenshot"
        crop = rgb[top : top + height, left : left + width].reshape(-1, 3)
        # a drawn figure: many colours, not a blank or broken-image box
        assert len(np.unique(crop, axis=0)) > 50, img["alt"]
        assert (crop < 100).all(axis=1).mean() > 0.001, img["alt"]  # dark ink: text, lines
