"""A data set's own split (`split.field`), the first N prompts (`first`), and what a dry run
counts for a classification task, on a real tiny local teacher."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stillroom.config import HarvestConfig, validate_config
from stillroom.harvest.runner import dry_run, harvest
from stillroom.teachers.local import LocalTeacher
from tests.helpers.tiny_models import make_tiny_lm

PARTS = ["train", "train", "test", "validation", "test", "train", "dev", "test", "train", "test"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("split") / "teacher")


def config(tmp_path: Path, teacher_dir: Path, **over: Any) -> HarvestConfig:
    items = tmp_path / "items.jsonl"
    with items.open("w") as f:
        for i, part in enumerate(PARTS):
            row = {"id": f"i{i}", "text": f"the cat sat {i}", "gold": ["cat", "dog"][i % 2]}
            f.write(json.dumps(row | {"part": part}) + "\n")
    raw: dict[str, Any] = {
        "name": "split",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {"path": str(items), "field": "text", "id_field": "id"},
        "teacher": {"kind": "local", "model": str(teacher_dir), "batch_size": 8},
        "generation": {"max_tokens": 3, "temperature": 0, "n": 2},
    }
    return validate_config(raw | over, "test")


def stored_splits(cfg: HarvestConfig) -> dict[str, str]:
    db = sqlite3.connect(cfg.run_dir / "harvest.sqlite")
    rows = db.execute("SELECT prompt_id, split FROM calls").fetchall()
    db.close()
    return dict(rows)


def test_split_field_decides_splits_and_moves_stored_calls_without_calling_again(
    tmp_path: Path, teacher_dir: Path
) -> None:
    teacher = LocalTeacher.load(str(teacher_dir), batch_size=8)
    hashed = config(tmp_path, teacher_dir, split={"train": 0.5, "validation": 0.0, "test": 0.5})
    assert harvest(hashed, teacher=teacher, show_progress=False).ok == len(PARTS)
    before = stored_splits(hashed)
    own = config(tmp_path, teacher_dir, split={"field": "part", "names": {"dev": "validation"}})
    want = {f"i{i}": own.split.split_for(p) for i, p in enumerate(PARTS)}
    result = harvest(own, teacher=teacher, show_progress=False)
    assert result.called == 0 and result.already_stored == len(PARTS)
    assert result.resplit == sum(before[k] != want[k] for k in want) > 0
    assert stored_splits(own) == want


def test_first_n_prompts_only(tmp_path: Path, teacher_dir: Path) -> None:
    cfg = config(tmp_path, teacher_dir)
    assert dry_run(cfg, first=4).calls_to_make == 4
    result = harvest(cfg, first=4, show_progress=False)
    assert result.planned == 4 and result.ok == 4
    assert sorted(stored_splits(cfg)) == ["i0", "i1", "i2", "i3"]


def test_a_classification_dry_run_counts_prompt_tokens_and_no_output(
    tmp_path: Path, teacher_dir: Path
) -> None:
    generate = dry_run(config(tmp_path, teacher_dir))
    task = {"kind": "classify", "labels": ["cat", "dog"], "gold_field": "gold"}
    classify = dry_run(config(tmp_path, teacher_dir, task=task, train={"objective": "labels"}))
    assert generate.output_tokens_max == 3 * 2 * len(PARTS)  # max_tokens x n per call
    assert classify.output_tokens_max == 0
    assert classify.input_tokens_est == generate.input_tokens_est > 0
    assert classify.calls_to_make == generate.calls_to_make == len(PARTS)
