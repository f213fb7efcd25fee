"""Empty teacher answers (the first generated token is a stop string): stored, skipped by
logit KD, and left out of eval's top-k KL with a count."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stillroom.config import HarvestConfig, validate_config
from stillroom.evaluate.topk import mean_topk_kl
from stillroom.harvest.runner import harvest
from stillroom.harvest.store import CallMeta, RunStore
from stillroom.teachers.base import Choice, Completion, GenerationParams, TeacherRequest, Usage
from stillroom.teachers.local import LocalTeacher
from stillroom.train.data import ExampleCounts, TeacherToStudent, VocabMismatch, iter_examples
from stillroom.train.students import load_student
from stillroom.train.trainer import train
from tests.helpers.tiny_models import make_sharp_tiny_lm

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "to", "big", "red", "tree"]


def _prompts(path: Path) -> list[str]:
    texts = []
    with path.open("w") as f:
        for i in range(36):
            text = " ".join(WORDS[(i * j + j) % len(WORDS)] for j in range(1, 4)) + f" {i % 10}"
            part = ("train", "validation", "test")[i % 3]
            f.write(json.dumps({"id": f"p{i}", "text": text, "part": part}) + "\n")
            texts.append(text)
    return texts


@pytest.fixture(scope="module")
def empty_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real harvest in which some answers are empty: the stop string is the first token
    the teacher generates, greedily, for the first prompt."""
    root = tmp_path_factory.mktemp("empty")
    teacher_dir = make_sharp_tiny_lm(root / "teacher")
    texts = _prompts(root / "p.jsonl")
    teacher = LocalTeacher.load(str(teacher_dir), batch_size=16)
    probe = teacher.generate([TeacherRequest(texts[0], params=GenerationParams(max_tokens=1))])
    stop = probe[0].choices[0].text
    assert stop.strip(), "the probe must give a visible first token to stop on"
    raw = {
        "name": "empty",
        "runs_dir": str(root / "runs"),
        "prompts": {"path": str(root / "p.jsonl"), "field": "text", "id_field": "id"},
        "teacher": {"kind": "local", "model": str(teacher_dir), "batch_size": 16},
        "generation": {"max_tokens": 8, "temperature": 0, "top_logprobs": 4, "stop": [stop]},
        "split": {"field": "part"},
        "train": {
            "objective": "logits",
            "student": {"init": "config", "layers": 1, "hidden_size": 32, "heads": 2,
                        "kv_heads": 1, "intermediate_size": 64, "seed": 0},
            "max_steps": 4, "batch_tokens": 256, "lr": 3e-3, "warmup_steps": 1,
            "eval_every": 2, "checkpoint_every": 0, "early_stopping_patience": None,
            "threads": 1,
        },
    }  # fmt: skip
    cfg = validate_config(raw, "test")
    assert harvest(cfg, teacher=teacher, show_progress=False).ok == 36
    return {"cfg": cfg, "empty": _empty_by_split(cfg)}


def _empty_by_split(cfg: HarvestConfig) -> dict[str, int]:
    """Stored answers with no text and no tokens, per split, read from the store's tables."""
    db = sqlite3.connect(cfg.run_dir / "harvest.sqlite")
    rows = db.execute(
        "SELECT c.split, COUNT(*) FROM calls c JOIN completions p ON p.call_key = c.key"
        " WHERE p.text = '' AND c.completion_tokens = 0 GROUP BY c.split"
    ).fetchall()
    db.close()
    return dict(rows)


def test_empty_answers_are_stored(empty_run: dict[str, Any]) -> None:
    empty = empty_run["empty"]
    assert empty.get("train", 0) >= 1 and empty.get("test", 0) >= 1, empty


def test_logit_kd_skips_empty_answers_and_counts_them(empty_run: dict[str, Any]) -> None:
    cfg = empty_run["cfg"]
    store = RunStore.open_run(cfg.run_dir)
    try:
        table = np.arange(4096, dtype=np.int64)
        counts = ExampleCounts()
        examples = list(
            iter_examples(
                store,
                "train",
                mapping=TeacherToStudent(table, identity=True),
                encode=lambda *a: ([], []),
                max_len=512,
                need_signals=True,
                counts=counts,
            )
        )
    finally:
        store.close()
    assert counts.empty == empty_run["empty"]["train"]
    assert len(examples) == 12 - counts.empty
    result = train(cfg, quiet=True)
    assert result.steps == 4 and result.best_val is not None and "val_kl" in result.best_val


def test_eval_kl_is_over_the_other_answers_and_says_how_many_were_empty(
    empty_run: dict[str, Any],
) -> None:
    cfg = empty_run["cfg"]
    student_dir = Path(cfg.run_dir / "student")
    if not (student_dir / "config.json").is_file():
        train(cfg, quiet=True)
    with torch.inference_mode():  # as eval runs it
        kl, note = mean_topk_kl(cfg, load_student(student_dir))
    assert kl is not None and kl > 0
    n = empty_run["empty"]["test"]
    assert note is not None and f"leaves out {n} empty teacher answer" in note


def test_a_harvest_without_top_k_still_names_that_fix(tmp_path: Path) -> None:
    """Only a truly missing top-k (not an empty answer) asks for generation.top_logprobs."""
    teacher_dir = make_sharp_tiny_lm(tmp_path / "teacher")
    _prompts(tmp_path / "p.jsonl")
    raw = {
        "name": "no-topk",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {"path": str(tmp_path / "p.jsonl"), "field": "text", "id_field": "id"},
        "teacher": {"kind": "local", "model": str(teacher_dir)},
        "generation": {"max_tokens": 4, "temperature": 0, "top_logprobs": 0},
    }
    cfg = validate_config(raw, "test")
    harvest(cfg, first=6, show_progress=False)
    store = RunStore.open_run(cfg.run_dir)
    try:
        with pytest.raises(VocabMismatch, match=r"harvest with generation.top_logprobs > 0"):
            list(
                iter_examples(
                    store,
                    "train",
                    mapping=None,
                    encode=lambda *a: ([], []),
                    max_len=64,
                    need_signals=True,
                )
            )
    finally:
        store.close()


def test_top_k_asked_for_but_not_returned_says_so(tmp_path: Path) -> None:
    """An API that ignores the request for log-probs: the fix is not 'ask for them'."""
    request = TeacherRequest("a prompt", params=GenerationParams(max_tokens=4, top_logprobs=5))
    meta = CallMeta(request.key("m"), "p0", 0, "train", request.canonical("m"), {})
    store = RunStore(tmp_path / "harvest.sqlite")
    try:
        answer = Choice(0, "an answer", "stop", tokens=["an", " answer"])
        store.write_ok(meta, Completion([answer], Usage(2, 2), "m", 0.1), 0.0)
        with pytest.raises(VocabMismatch) as caught:
            list(
                iter_examples(
                    store,
                    "train",
                    mapping=None,
                    encode=lambda *a: ([], []),
                    max_len=64,
                    need_signals=True,
                )
            )
    finally:
        store.close()
    message = str(caught.value)
    assert "asked for 5 top log-probs (generation.top_logprobs) but the teacher returned none" in (
        message
    )
    assert "> 0" not in message
