"""On-policy distillation against a real tiny teacher: the student samples, the teacher scores
its tokens through the run store, and a killed run resumes without paying a call again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stillroom.config import validate_config
from stillroom.errors import BudgetExceeded, ConfigError
from stillroom.harvest.runner import harvest
from stillroom.harvest.signals import decode_topk
from stillroom.harvest.store import RunStore
from stillroom.prices import Price
from stillroom.serve import accounts as acc
from stillroom.serve.app import create_app
from stillroom.serve.backends import LocalBackend
from stillroom.serve.db import open_db
from stillroom.serve.gateway import ServeSettings
from stillroom.student_config import StudentConfig
from stillroom.teacher_config import ApiTeacherConfig
from stillroom.teachers.local import LocalTeacher
from stillroom.train.data import TeacherToStudent, iter_examples
from stillroom.train.student_vocab import student_prompt_ids
from stillroom.train.students import load_student
from stillroom.train.teacher_scores import LocalScorer, ScoreCache, make_scorer
from stillroom.train.trainer import train
from tests.helpers.kills import train_until_checkpoint
from tests.helpers.serve import running
from tests.train.test_train import config, harvested, log_rows

__all__ = ["harvested"]  # the module fixture: one tiny harvest for every test here

ON_POLICY: dict[str, Any] = {
    "objective": "on_policy",
    "divergence": "reverse_kl",
    "on_policy": {"lambda": 1.0, "max_new_tokens": 8, "top_k": 8},
}


def scores(cfg: Any) -> list[tuple[str, int, int, bytes]]:
    with sqlite3.connect(cfg.run_dir / "harvest.sqlite") as db:
        return db.execute("SELECT key, tokens, scored, topk FROM teacher_scores").fetchall()


def test_on_policy_scores_the_students_own_answers_and_moves_it_to_the_teacher(
    harvested: dict[str, Any],
) -> None:
    cfg = config(harvested, "op", max_steps=16, eval_every=4, **ON_POLICY)
    result = train(cfg, quiet=True)
    assert result.steps == 16 and result.on_policy is not None
    assert result.on_policy["own_batches"] == 16
    rows = scores(cfg)
    assert result.on_policy["scoring_calls_paid"] == len(rows) > 0
    # Each stored answer's top-k has one row per scored token, k wide, in teacher ids.
    for _, tokens, scored, blob in rows[:5]:
        sig = decode_topk(blob)
        assert scored == sig.T and 1 <= scored <= 8 + 1 and tokens > scored and sig.k == 8
    # Trained only on its own answers, it comes closer to the teacher on the teacher's
    # held-out answers too (KL to the stored top-k of the validation split).
    val = [r["val_kl"] for r in log_rows(cfg) if "val_kl" in r]
    assert len(val) == 4 and val[-1] < val[0] - 0.01


def test_a_scoring_call_stores_the_teachers_distribution_and_is_never_sent_twice(
    harvested: dict[str, Any], tmp_path: Path
) -> None:
    teacher = LocalTeacher.load(str(harvested["root"] / "teacher"))
    store = RunStore(tmp_path / "harvest.sqlite")
    cache = ScoreCache(store, LocalScorer(teacher), 8, Price(0.0, 0.0), None)
    seq = [int(i) for i in teacher.tokenizer("the cat sat on a mat and ran")["input_ids"]]
    (blob,) = cache.blobs([seq], [3])
    sig = decode_topk(blob)
    (direct,) = teacher.sequence_logprobs([seq], 8)
    # Answer token j (sequence index 3 + j) is predicted by the teacher's row 2 + j.
    assert len(seq) - 3 == sig.T
    np.testing.assert_array_equal(sig.ids, direct.top_ids[2 : len(seq) - 1])
    np.testing.assert_allclose(sig.logprobs, direct.top_logprobs[2 : len(seq) - 1], atol=0.01)
    assert cache.calls_made == 1 and cache.tokens_paid == len(seq)
    again = ScoreCache(store, LocalScorer(teacher), 8, Price(0.0, 0.0), None)
    assert again.blobs([seq], [3]) == [blob]
    assert again.calls_made == 0 and again.calls_reused == 1
    assert store.score_totals() == (1, len(seq), 0.0)


def test_a_killed_on_policy_run_resumes_without_paying_a_call_twice(
    harvested: dict[str, Any],
) -> None:
    whole = config(harvested, "op-whole", max_steps=12, **ON_POLICY)
    train(whole, quiet=True)
    reference = {r["step"]: r["loss"] for r in log_rows(whole) if "loss" in r}
    paid_whole = {key for key, *_ in scores(whole)}

    cut = config(harvested, "op-cut", max_steps=12, **ON_POLICY)
    proc = train_until_checkpoint(cut, 4)
    deadline = time.monotonic() + 120
    at_checkpoint = len(scores(cut))
    while len(scores(cut)) == at_checkpoint:  # let it pay for a batch past the checkpoint
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {key for key, *_ in scores(cut)}

    result = train(cut, resume=True, quiet=True)
    assert result.steps == 12 and result.on_policy is not None
    after = {key for key, *_ in scores(cut)}
    # The resumed run redrew the answers it had drawn before the kill, and read their scores
    # back; every call it paid is one the killed run never stored.
    assert result.on_policy["scoring_calls_paid"] == len(after - before)
    assert result.on_policy["scoring_calls_reused"] > 0
    assert after == paid_whole  # the same calls as a run that was never killed
    resumed = {r["step"]: r["loss"] for r in log_rows(cut) if "loss" in r}
    for step in range(5, 13):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-4), step


def test_the_budget_caps_scoring_calls(harvested: dict[str, Any]) -> None:
    cfg = config(harvested, "op-budget", max_steps=4, eval_every=0, **ON_POLICY)
    cfg.cost.input_per_1m = cfg.cost.output_per_1m = 1000.0
    cfg.cost.budget_usd = 0.001  # one token costs $0.001: the first batch does not fit
    with pytest.raises(BudgetExceeded, match="cost.budget_usd"):
        train(cfg, quiet=True)
    assert scores(cfg) == []


def test_on_policy_is_refused_for_a_classification_task(harvested: dict[str, Any]) -> None:
    raw = {**harvested["raw"], "task": {"kind": "classify", "labels": ["a", "b"]}}
    raw["train"] = {**raw["train"], "objective": "on_policy"}
    from stillroom.config import validate_config

    with pytest.raises(ConfigError, match="on_policy needs task.kind: generate"):
        validate_config(raw, "test")


@pytest.fixture
def served_teacher(harvested: dict[str, Any], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The tiny teacher behind a real gateway (`stillroom serve`'s app), with one key."""
    teacher = LocalTeacher.load(str(harvested["root"] / "teacher"), batch_size=16)
    engine = open_db(str(tmp_path / "gateway.sqlite"))
    backend = LocalBackend(teacher, default_max_tokens=8, max_tokens_limit=64)
    app = create_app(engine, backend, ServeSettings(admin_token="admin-token"))
    _, key = acc.create_account(engine, "trainer")
    with running(app) as url:
        yield url, key.key
    engine.dispose()


def test_a_served_teacher_scores_exactly_as_the_local_one(
    harvested: dict[str, Any], served_teacher: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, key = served_teacher
    monkeypatch.setenv("STILLROOM_TEST_KEY", key)
    api = ApiTeacherConfig(
        model=str(harvested["root"] / "teacher"), base_url=url, api_key_env="STILLROOM_TEST_KEY"
    )
    scorer = make_scorer(api)
    local = LocalScorer(LocalTeacher.load(str(harvested["root"] / "teacher")))
    tok = local.teacher.tokenizer
    seqs = [tok(t)["input_ids"] for t in ("the cat sat on a mat", "a big red house and a tree")]
    served, here = scorer.score(seqs, [2, 4], 8), local.score(seqs, [2, 4], 8)
    for a, b in zip(served, here, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_on_policy_through_a_served_teacher_trains_as_with_the_local_one(
    harvested: dict[str, Any], served_teacher: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, key = served_teacher
    monkeypatch.setenv("STILLROOM_TEST_KEY", key)
    local = config(harvested, "op-local", max_steps=8, eval_every=8, **ON_POLICY)
    served = config(harvested, "op-served", max_steps=8, eval_every=8, **ON_POLICY)
    served.teacher = ApiTeacherConfig(
        model=str(harvested["root"] / "teacher"),
        base_url=url,
        api_key_env="STILLROOM_TEST_KEY",
        concurrency=4,
    )
    # An API teacher has no folder to build from: both students are cut from the open
    # model behind it, so they start identical.
    for cfg in (local, served):
        cfg.train.student = StudentConfig(init="shrink", path=str(harvested["root"] / "teacher"))
    train(local, quiet=True)
    result = train(served, quiet=True)
    assert result.on_policy is not None and result.on_policy["scoring_calls_paid"] > 0
    # The same student, samples and teacher distributions: the same losses, step by step.
    a = [r["loss"] for r in log_rows(local) if "loss" in r]
    b = [r["loss"] for r in log_rows(served) if "loss" in r]
    assert b == pytest.approx(a, abs=1e-3)


def test_a_trained_trimmed_student_goes_on_policy_through_a_served_teacher(
    harvested: dict[str, Any], served_teacher: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, key = served_teacher
    monkeypatch.setenv("STILLROOM_TEST_KEY", key)
    folder = str(harvested["root"] / "teacher")
    start = config(harvested, "op-warm-start", max_steps=4, eval_every=4)
    trimmed = train(start, quiet=True).student
    assert trimmed["vocab_student"] < trimmed["vocab_teacher"]  # its ids are not the teacher's
    local = config(harvested, "op-warm-local", max_steps=6, eval_every=6, **ON_POLICY)
    served = config(harvested, "op-warm-served", max_steps=6, eval_every=6, **ON_POLICY)
    served.teacher = ApiTeacherConfig(
        model=folder, base_url=url, api_key_env="STILLROOM_TEST_KEY", folder=folder
    )
    for cfg in (local, served):
        cfg.train.student = StudentConfig(init="pretrained", path=str(start.run_dir / "student"))
    train(local, quiet=True)
    result = train(served, quiet=True)
    assert result.on_policy is not None and result.on_policy["scoring_calls_paid"] > 0
    # Its ids map to the served model's through teacher.folder: the same losses as local.
    a = [r["loss"] for r in log_rows(local) if "loss" in r]
    b = [r["loss"] for r in log_rows(served) if "loss" in r]
    assert len(b) == 6 and b == pytest.approx(a, abs=1e-3)
    # Without the folder the student's ids have no reference: refused before any call.
    raw = json.loads(json.dumps(harvested["raw"]))
    raw["teacher"] = {"kind": "api", "model": folder, "base_url": url}
    raw["train"] |= ON_POLICY | {"student": {"init": "pretrained", "path": folder}}
    with pytest.raises(ConfigError, match="needs teacher.folder"):
        validate_config(raw, "test")
    raw["teacher"]["folder"] = str(harvested["root"])  # no config.json there
    bad = validate_config(raw, "test")
    before = len(scores(bad))
    with pytest.raises(ConfigError, match="teacher.folder: .* has no config.json"):
        train(bad, quiet=True)
    assert len(scores(bad)) == before  # refused before any scoring call


def test_logit_kd_from_a_harvest_of_a_served_teacher_with_token_ids(
    harvested: dict[str, Any], served_teacher: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, key = served_teacher
    monkeypatch.setenv("STILLROOM_TEST_KEY", key)
    raw = json.loads(json.dumps(harvested["raw"]))
    folder = str(harvested["root"] / "teacher")
    raw |= {
        "name": "served-ids",
        "teacher": {
            "kind": "api",
            "model": folder,
            "base_url": url,
            "api_key_env": "STILLROOM_TEST_KEY",
            "endpoint": "completions",
            "token_ids": True,
        },
    }
    raw["train"] |= {"max_steps": 4, "eval_every": 4}
    raw["train"]["student"] = {"init": "shrink", "path": folder}
    cfg = validate_config(raw, "test")
    assert harvest(cfg, show_progress=False).ok == 60
    result = train(cfg, quiet=True)  # objective: logits, which needs ids and top-k
    assert result.best_val is not None and result.best_val["val_kl"] > 0


def test_a_student_reading_its_own_prompt_is_scored_after_the_teachers(
    harvested: dict[str, Any], tmp_path: Path
) -> None:
    """task.student_template: the student trains and samples on its own short prompt, while
    the teacher scores the student's answer after the teacher's prompt."""
    raw = json.loads(json.dumps(harvested["raw"]))
    raw |= {"name": "own-prompt", "runs_dir": str(tmp_path / "runs")}
    raw["task"] = {"kind": "generate", "student_template": "{text} ="}
    raw["train"] |= {"max_steps": 3, "eval_every": 0, **ON_POLICY}
    cfg = validate_config(raw, "test")
    assert "text" in cfg.prompts.keep_fields  # the store keeps what the student reads
    teacher = LocalTeacher.load(cfg.teacher.model)
    assert harvest(cfg, teacher=teacher, show_progress=False).ok == 60
    train(cfg, quiet=True)
    student = load_student(cfg.run_dir / "student")
    with sqlite3.connect(cfg.run_dir / "harvest.sqlite") as db:
        prompts = [json.loads(r)["prompt"] for (r,) in db.execute("SELECT request FROM calls")]
        sent = db.execute("SELECT tokens - scored FROM teacher_scores").fetchall()
    teacher_lengths = {len(teacher.tokenizer(p)["input_ids"]) for p in prompts}
    assert sent and {n for (n,) in sent} <= teacher_lengths  # the teacher's prompt, whole
    examples = iter_examples(
        RunStore(cfg.run_dir / "harvest.sqlite"), "train",
        mapping=TeacherToStudent(student.teacher_to_student(), student.to_teacher is None),
        encode=lambda *a: ([], []), max_len=512, need_signals=False,
        student_prompt=lambda f, w: student_prompt_ids(student.tokenizer, "{text} =", f, w),
    )  # fmt: skip
    first = next(examples)
    assert student.tokenizer.decode(first.input_ids[: first.start]).endswith(" =")
    assert first.teacher_prompt is not None and len(first.teacher_prompt) in teacher_lengths
