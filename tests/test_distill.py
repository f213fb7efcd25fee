"""`stillroom distill` end to end on a tiny local teacher and a classification task."""

from __future__ import annotations

import json
from pathlib import Path

from stillroom.config import validate_config
from stillroom.distill import distill
from stillroom.evaluate.run import evaluate
from tests.helpers.tiny_models import make_sharp_tiny_lm

WORDS = ["red", "blue", "cat", "dog", "sun", "moon", "tree", "rock", "fish", "bird", "rain"]


def test_distill_runs_every_stage_resumes_and_eval_repeats(tmp_path: Path) -> None:
    teacher = make_sharp_tiny_lm(tmp_path / "teacher")
    items = tmp_path / "items.jsonl"
    with items.open("w") as f:
        for i in range(120):
            text = " ".join(WORDS[(i * j + j) % len(WORDS)] for j in range(1, 4)) + f" {i}"
            f.write(json.dumps({"id": f"i{i}", "text": text, "gold": ["cat", "dog"][i % 2]}))
            f.write("\n")
    raw = {
        "name": "tiny-distill",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {"path": str(items), "template": "a {text} is a", "id_field": "id"},
        "teacher": {"kind": "local", "model": str(teacher), "batch_size": 16},
        "task": {"kind": "classify", "labels": ["cat", "dog"], "gold_field": "gold",
                 "student_template": "a {text} is a"},
        "split": {"train": 0.6, "validation": 0.1, "test": 0.3},
        "train": {"objective": "labels", "max_steps": 8, "eval_every": 4, "threads": 1,
                  "student": {"init": "config", "layers": 1, "hidden_size": 32, "heads": 2,
                              "kv_heads": 1, "intermediate_size": 64}},
    }  # fmt: skip
    cfg = validate_config(raw, "test")
    out = distill(cfg, show_progress=False)
    run = cfg.run_dir
    for name in ("harvest.sqlite", "student/config.json", "baseline/student/config.json",
                 "eval.json", "report.md", "report.html"):  # fmt: skip
        assert (run / name).exists(), name
    models = out["eval"]["models"]
    assert {k for k, m in models.items() if m["role"] != "trivial"} == {
        "teacher",
        "student",
        "baseline",
    }
    assert "the student keeps" in out["headline"]
    assert models["student"]["efficiency"]["params"] < models["teacher"]["efficiency"]["params"]

    # A rerun finds every stage done: nothing is harvested or trained again.
    before = (run / "student" / "model.safetensors").stat().st_mtime_ns
    again = distill(cfg, show_progress=False)
    assert (run / "student" / "model.safetensors").stat().st_mtime_ns == before
    assert again["eval"]["harvest"]["calls"] == out["eval"]["harvest"]["calls"]

    # The same student evaluated twice gives the same task metrics.
    second = evaluate(cfg)
    for role in ("teacher", "student", "baseline"):
        assert second["models"][role]["quality"] == models[role]["quality"]
        assert second["models"][role]["fidelity"] == models[role]["fidelity"]

    # Served in bfloat16, the students are timed in that precision and still agree with
    # their float32 selves on nearly every test item.
    cfg_bf16 = validate_config({**raw, "eval": {"student_dtype": "bfloat16"}}, "test")
    half = evaluate(cfg_bf16)
    for role in ("student", "baseline"):
        assert half["models"][role]["efficiency"]["dtype"] == "bfloat16"
        assert models[role]["efficiency"]["dtype"] == "float32"
        full_acc = models[role]["quality"]["accuracy"]
        assert abs(half["models"][role]["quality"]["accuracy"] - full_acc) <= 0.05
    assert half["models"]["teacher"]["efficiency"]["dtype"] == "float32"


def test_distill_limit_uses_the_first_prompts_and_a_full_run_trains_again(
    tmp_path: Path,
) -> None:
    teacher = make_sharp_tiny_lm(tmp_path / "teacher")
    items = tmp_path / "items.jsonl"
    with items.open("w") as f:
        for i in range(40):
            text = " ".join(WORDS[(i * j + j) % len(WORDS)] for j in range(1, 4)) + f" {i}"
            part = ("train", "test")[i % 2]
            gold = ["cat", "dog"][i % 3 % 2]
            f.write(json.dumps({"id": f"i{i}", "text": text, "gold": gold, "part": part}) + "\n")
    raw = {
        "name": "tiny-limit",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {"path": str(items), "template": "a {text} is a", "id_field": "id"},
        "teacher": {"kind": "local", "model": str(teacher), "batch_size": 16},
        "task": {"kind": "classify", "labels": ["cat", "dog"], "gold_field": "gold",
                 "student_template": "a {text} is a"},
        "split": {"field": "part"},
        "train": {"objective": "labels", "max_steps": 2, "eval_every": 0, "threads": 1,
                  "early_stopping_patience": None,
                  "student": {"init": "config", "layers": 1, "hidden_size": 16, "heads": 2,
                              "kv_heads": 1, "intermediate_size": 32}},
    }  # fmt: skip
    cfg = validate_config(raw, "test")
    trial = distill(cfg, show_progress=False, limit=10)
    assert trial["eval"]["harvest"]["calls"] == 10
    assert trial["eval"]["task"]["n_test"] == 5  # the first ten prompts' test half
    student = cfg.run_dir / "student" / "model.safetensors"
    before = student.stat().st_mtime_ns
    full = distill(cfg, show_progress=False)
    assert full["eval"]["harvest"]["calls"] == 40
    assert full["eval"]["task"]["n_test"] == 20
    assert student.stat().st_mtime_ns != before  # trained again on all the prompts
