"""Checks before paying: a classification task's label and gold-label problems are found
before the first teacher call, all at once, each with its key and fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from stillroom.config import HarvestConfig, validate_config
from stillroom.errors import ConfigError
from stillroom.harvest.preflight import TaskProblems, check_task
from stillroom.harvest.prompts import load_prompts
from stillroom.harvest.runner import dry_run, harvest
from tests.helpers.tiny_models import make_tiny_lm, make_tiny_tokenizer

ROWS = [
    ("the cat sat on the mat", "cat"),
    ("a dog ran to the tree", "dog"),
    ("the red cat", "Cat"),  # the wrong case
    ("the blue house", "house"),  # no such label
    ("a big dog", "dog"),
    ("she sells sea shells", "house"),
]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("preflight") / "teacher")


def write_items(path: Path, rows: list[tuple[str, str]] = ROWS) -> Path:
    with path.open("w") as f:
        for i, (text, gold) in enumerate(rows):
            f.write(json.dumps({"id": f"i{i}", "text": text, "gold": gold}) + "\n")
    return path


def classify_config(tmp_path: Path, teacher: dict[str, Any], **task: Any) -> HarvestConfig:
    raw: dict[str, Any] = {
        "name": "checks",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {"path": str(write_items(tmp_path / "items.jsonl")), "id_field": "id",
                    "template": "{text} is a"},
        "teacher": teacher,
        "task": {"kind": "classify", "labels": ["cat", "dog"], "gold_field": "gold",
                 "student_template": "{text} is a", **task},
        "train": {"objective": "labels"},
    }  # fmt: skip
    return validate_config(raw, "test")


def test_every_problem_is_listed_at_once_before_the_run_folder_or_teacher_exists(
    tmp_path: Path, teacher_dir: Path
) -> None:
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    pieces = [tok.decode([t]) for t in tok(" sea shells", add_special_tokens=False).input_ids]
    assert pieces == [" sea", " shells"]  # the tiny tokenizer's own split of the label
    assert len(tok(" sea", add_special_tokens=False).input_ids) == 1
    cfg = classify_config(
        tmp_path,
        {"kind": "local", "model": str(teacher_dir)},
        labels=["cat", "dog", "sea shells", "sea", "cat", " mat "],
        student_template="{text} is a ",
    )
    with pytest.raises(TaskProblems) as caught:
        harvest(cfg, show_progress=False)
    problems = caught.value.problems
    items = tmp_path / "items.jsonl"
    expected = [
        "task.labels: 'cat' is listed 2 times",
        "task.labels[5]: ' mat ' has leading or trailing whitespace; write 'mat'",
        f"task.labels[2]: 'sea shells' is 2 tokens for the teacher's tokenizer (candidate "
        f"' sea shells' -> {pieces}); the student answers with one token, so only ' sea' "
        "would count",
        "task.labels: ['sea shells', 'sea'] start with the same token ' sea'",
        "task.student_template ends with whitespace",
        f"task.gold_field 'gold': 'Cat' is not one of task.labels (did you mean 'cat'?), in "
        f"1 row ({items}:3)",
        f"task.gold_field 'gold': 'house' is not one of task.labels, in 2 rows ({items}:4, "
        f"{items}:6); correct those rows, or add the value to task.labels",
    ]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)
    assert len(problems) == len(expected)
    assert str(caught.value).startswith("checks before the first teacher call: 7 problems")
    assert not cfg.run_dir.exists()  # nothing was stored, no teacher was loaded


def test_dry_run_makes_the_same_checks(tmp_path: Path, teacher_dir: Path) -> None:
    cfg = classify_config(tmp_path, {"kind": "local", "model": str(teacher_dir)})
    with pytest.raises(ConfigError, match=r"'house' is not one of task.labels"):
        dry_run(cfg)


def test_prompts_ending_in_a_space_before_the_label_prefix_are_named(
    tmp_path: Path, teacher_dir: Path
) -> None:
    cfg = classify_config(tmp_path, {"kind": "local", "model": str(teacher_dir)})
    cfg.prompts.template = "{text} is a "
    clean = [row for row in ROWS if row[1] in ("cat", "dog")]
    items, _ = load_prompts(cfg.prompts, cfg.split)
    good = [it for it in items if it.fields["gold"] in ("cat", "dog")]
    with pytest.raises(TaskProblems) as caught:
        check_task(cfg, good)
    (problem,) = caught.value.problems
    assert problem.startswith(f"prompts: {len(clean)} of {len(clean)} prompts end with whitespace")
    assert f"{tmp_path / 'items.jsonl'}:1" in problem


def test_an_api_teacher_is_refused_and_the_unchecked_tokens_are_said(tmp_path: Path) -> None:
    api = {"kind": "api", "model": "some-api-model", "base_url": "http://127.0.0.1:9/v1"}
    cfg = classify_config(tmp_path, api, labels=["cat", "dog", "dog"])
    with pytest.raises(TaskProblems) as caught:
        harvest(cfg, show_progress=False)
    message = str(caught.value)
    assert "teacher.kind: api cannot score task.labels" in message
    assert "task.labels: 'dog' is listed 2 times" in message
    assert "'house' is not one of task.labels" in message  # gold labels need no tokenizer
    assert "(not checked: the labels' tokens in the teacher's tokenizer: teacher.kind api" in (
        message
    )
    assert not cfg.run_dir.exists()


def test_the_students_own_tokenizer_is_checked_too(tmp_path: Path, teacher_dir: Path) -> None:
    """A student with another tokenizer scores labels in its own vocabulary."""
    own = tmp_path / "student-tokenizer"
    make_tiny_tokenizer(own, vocab_size=300)
    tok = AutoTokenizer.from_pretrained(own)
    split = [w for w in ("cat", "dog", "mat", "fox") if len(tok(" " + w).input_ids) > 2]
    assert split, "the smaller vocabulary splits some label"
    cfg = classify_config(tmp_path, {"kind": "local", "model": str(teacher_dir)})
    cfg.train.student.init = "config"
    cfg.train.student.tokenizer = str(own)
    cfg.task.labels = ["cat", "dog", "mat", "fox"]
    items, _ = load_prompts(cfg.prompts, cfg.split)
    rows = [it for it in items if it.fields["gold"] in cfg.task.labels]
    with pytest.raises(TaskProblems) as caught:
        check_task(cfg, rows)
    named = [p for p in caught.value.problems if "for the student's tokenizer" in p]
    assert {p.split("'")[1] for p in named if "tokens for" in p} == set(split)


def test_a_clean_task_passes_with_a_note_on_labels_no_row_has(
    tmp_path: Path, teacher_dir: Path
) -> None:
    cfg = classify_config(tmp_path, {"kind": "local", "model": str(teacher_dir)})
    cfg.task.labels = ["cat", "dog", "mat"]
    clean = [r for r in ROWS if r[1] in ("cat", "dog")]
    cfg.prompts.path = write_items(tmp_path / "clean.jsonl", clean)
    items, _ = load_prompts(cfg.prompts, cfg.split)
    notes = check_task(cfg, items)
    assert notes == [
        "task.labels: 'mat' is the gold label of no prompt row; the student and the baseline "
        "see no example of it"
    ]


def test_an_api_teachers_model_with_a_tokenizer_here_has_its_labels_checked(
    tmp_path: Path, teacher_dir: Path
) -> None:
    """An API serving a model this machine holds (as `stillroom serve` does) is checked in
    that model's tokenizer."""
    api = {"kind": "api", "model": str(teacher_dir), "base_url": "http://127.0.0.1:9/v1"}
    cfg = classify_config(tmp_path, api, labels=["cat", "dog", "sea shells"])
    with pytest.raises(TaskProblems) as caught:
        dry_run(cfg)
    assert any("'sea shells' is 2 tokens for the teacher's" in p for p in caught.value.problems)
    assert "not checked" not in str(caught.value)


def test_an_api_teachers_folder_is_checked_before_any_call(
    tmp_path: Path, teacher_dir: Path
) -> None:
    raw: dict[str, Any] = {
        "name": "folder",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {"path": str(write_items(tmp_path / "items.jsonl")), "id_field": "id",
                    "template": "{text}:"},
        "teacher": {"kind": "api", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                    "folder": str(tmp_path)},  # no config.json there
    }  # fmt: skip
    cfg = validate_config(raw, "test")
    items = load_prompts(cfg.prompts, cfg.split)[0]
    with pytest.raises(TaskProblems, match="teacher.folder: .* has no config.json"):
        check_task(cfg, items)
    with pytest.raises(TaskProblems, match="teacher.folder"):
        harvest(cfg, show_progress=False)  # the unreachable teacher is never called
    assert not (tmp_path / "runs").exists()
    raw["teacher"]["folder"] = str(teacher_dir)  # a model folder: nothing to say
    assert check_task(validate_config(raw, "test"), items) == []
