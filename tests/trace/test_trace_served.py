"""The served-answer test on tiny real models behind a real gateway: a student of what one
account received is caught, by likelihood and by its answers; a student of other draws of the
same prompts is not, over many runs; the log, the key and the cache are checked."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from scipy import stats
from typer.testing import CliRunner

from stillroom.cli import app
from stillroom.errors import InputError
from stillroom.serve import accounts as acc
from stillroom.serve.app import create_app
from stillroom.serve.backends import LocalBackend
from stillroom.serve.db import open_db
from stillroom.teachers.local import LocalTeacher
from stillroom.trace.served import (
    answer_logprobs,
    answers_test,
    check_key,
    likelihood_test,
    paired_test,
    read_served,
    replay,
    replays,
    trigram_overlap,
    twin_replays,
    twin_test,
)
from stillroom.trace.suspects import LocalSuspect
from stillroom.trace.tail import choice_tail, upper_tail
from tests.helpers.serve import running
from tests.helpers.tiny_models import SENTENCES, fit_on_answers, make_wordy_tiny_lm

KEY_BYTES = b"s" * 32
PROMPTS = 96


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A watermarked tiny teacher behind the gateway; 'harvester' asks 96 questions once
    each, 'user' a few. root/student trains on what the harvester received; root/control on
    the teacher's answers to the same questions drawn another time."""
    from stillroom.watermark.key import WatermarkKey, save_key

    root = tmp_path_factory.mktemp("served")
    key = WatermarkKey(KEY_BYTES, delta=3.0, context_width=1)
    save_key(key, root / "wm.json")
    teacher_dir = make_wordy_tiny_lm(root / "teacher")
    teacher = LocalTeacher.load(str(teacher_dir), batch_size=32, watermark=key)
    teacher.model = "writer"  # sampling seeds derive from the name: not from a temp path
    words = sorted({w for s in SENTENCES for w in s.split()})
    rng = random.Random(0)
    prompts = [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) for _ in range(PROMPTS)
    ]
    db = str(root / "gateway.sqlite")
    engine = open_db(db)
    backend = LocalBackend(teacher, default_max_tokens=32, max_tokens_limit=64)
    harvester = acc.create_account(engine, "harvester")[1].key
    user = acc.create_account(engine, "user")[1].key
    with running(create_app(engine, backend)) as url:
        served = []
        for key_, asked in ((harvester, prompts), (user, prompts[:5])):
            client = openai.OpenAI(base_url=url, api_key=key_, max_retries=0)
            for p in asked:
                reply = client.chat.completions.create(
                    model=backend.model_id,
                    messages=[{"role": "user", "content": p}],
                    max_tokens=32,
                    temperature=1.0,
                    seed=0,
                )
                if key_ == harvester:
                    served.append(reply.choices[0].message.content or "")
    engine.dispose()
    shutil.copytree(teacher_dir, root / "student")
    fit_on_answers(root / "student", prompts, served, steps=80, lr=3e-3)
    others = LocalSuspect.__new__(LocalSuspect)
    others.teacher, others.name = teacher, "teacher"
    elsewhere = others.answer(prompts, max_tokens=32, temperature=1.0, seed=7)
    shutil.copytree(teacher_dir, root / "control")
    fit_on_answers(root / "control", prompts, elsewhere, steps=80, lr=3e-3)
    return {"root": root, "db": db, "key": key, "teacher": teacher, "served": served}


def test_the_log_gives_what_each_account_was_served(world: dict[str, Any]) -> None:
    items = read_served(world["db"], ["harvester"])
    assert [s.text for s in items] == world["served"]
    assert all(s.key_id == world["key"].key_id for s in items)
    assert items[0].params["temperature"] == 1.0 and items[0].params["max_tokens"] == 32
    assert len(read_served(world["db"], ["user"])) == 5
    assert len(read_served(world["db"], ["harvester", "user"], limit=10)) == 10
    with pytest.raises(InputError, match="no such account.*harvester"):
        read_served(world["db"], ["nobody"])
    with pytest.raises(InputError, match="no such gateway database"):
        read_served(str(world["root"] / "missing.sqlite"), ["harvester"])


def test_the_replay_must_carry_the_served_key(world: dict[str, Any]) -> None:
    from stillroom.watermark.key import WatermarkKey

    items = read_served(world["db"], ["harvester"])
    check_key(items, world["key"])
    with pytest.raises(InputError, match="give --key-file"):
        check_key(items, None)
    with pytest.raises(InputError, match="watermarked with key"):
        check_key(items, WatermarkKey(b"x" * 32, context_width=1))


def counted(teacher: LocalTeacher) -> tuple[Any, list[int]]:
    """A teacher factory that counts its calls: (factory, calls)."""
    made: list[int] = []

    def make() -> LocalTeacher:
        made.append(1)
        return teacher

    return make, made


def no_teacher() -> LocalTeacher:
    raise AssertionError("every replay is in the cache")


def test_replays_are_fresh_draws_and_cached(world: dict[str, Any], tmp_path: Path) -> None:
    items = read_served(world["db"], ["harvester"])[:12]
    make, made = counted(world["teacher"])
    cache = tmp_path / "replays.jsonl"
    first = replays(items, make, seed=3, cache=cache)
    # A new seed: not the served answer again (the account sent seed 0 every time).
    assert sum(a != s.text for a, s in zip(first, items, strict=True)) >= 10
    assert replays(items, make, seed=3, cache=cache) == first and len(made) == 1
    assert len(cache.read_text().splitlines()) == 12
    cache.write_text("not json\n")
    with pytest.raises(InputError, match=r"replays.jsonl:1"):
        replays(items, make, seed=3, cache=cache)


def test_replay_cache_keeps_answers_holding_unicode_line_breaks(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """A model's answer may hold U+2028 or U+0085, which the cache keeps raw: its rows must
    still read back whole, with no teacher call."""
    items = read_served(world["db"], ["harvester"])[:3]
    texts = ["one\u2028two", "three\x85four", "five\u2029six\x0cseven"]
    cache = tmp_path / "replays.jsonl"
    rows = [{"ref": s.ref, "seed": 3, "text": t} for s, t in zip(items, texts, strict=True)]
    cache.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert replays(items, no_teacher, seed=3, cache=cache) == texts


def test_twin_replays_keep_every_seed_in_one_cache(world: dict[str, Any], tmp_path: Path) -> None:
    items = read_served(world["db"], ["harvester"])[:12]
    make, made = counted(world["teacher"])
    cache = tmp_path / "replays.jsonl"
    one = replays(items, make, seed=5, cache=cache)
    three = twin_replays(items, make, twins=3, seed=5, cache=cache)
    assert three[0] == one and len(made) == 2  # seed 5 read back; 6 and 7 from one load
    assert sum(a != b for a, b in zip(three[1], three[2], strict=True)) >= 10
    assert len(cache.read_text().splitlines()) == 36
    assert twin_replays(items, no_teacher, twins=3, seed=5, cache=cache) == three
    with pytest.raises(ValueError, match="one list of replays per twin"):
        likelihood_test("x", items, one, accounts=["harvester"])  # a flat list: not twins


def test_a_request_served_twice_gets_twins_of_its_own_when_part_is_cached(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Repeats are numbered over the whole log: a repeat replayed after its first copy was
    cached must not be drawn as that copy's twin again."""
    from dataclasses import replace

    first = read_served(world["db"], ["harvester"])[:4]
    again = [replace(s, request_id=s.request_id + "-again") for s in first]
    cache = tmp_path / "replays.jsonl"
    early = replays(first, lambda: world["teacher"], seed=2, cache=cache)
    both = replays(first + again, lambda: world["teacher"], seed=2, cache=cache)
    assert both[:4] == early
    assert sum(a != b for a, b in zip(both[4:], early, strict=True)) >= 3, both
    assert both == replay(first + again, world["teacher"], seed=2)  # as if drawn at once


def _enumerated(v: np.ndarray) -> float:
    """P(S >= observed) over every assignment of which entry per row was the real one."""
    c = v - v.mean(axis=1, keepdims=True)
    sums = np.zeros(1)
    for row in c:
        sums = np.add.outer(sums, row).ravel()
    return float(np.mean(sums >= c[:, 0].sum() - 1e-9))


def test_choice_tail_matches_full_enumeration() -> None:
    """Three or four entries per row, each equally likely to be the served one: every
    assignment counted, for continuous and lattice scores, and at S's largest value."""
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.8, 1.6):
        for m in (3, 4):
            n = 11 if m == 3 else 9  # 177,147 and 262,144 assignments: the saddlepoint's work
            v = rng.normal(0.0, 1.0, size=(n, m))
            v[:, 0] += shift
            exact, tail = _enumerated(v), twin_test(v)
            assert tail.p_bound >= exact
            assert tail.p_value == pytest.approx(exact, rel=0.35, abs=2e-3), (m, shift, exact, tail)
    # Few rows are counted exactly; ties with the observed sum count as reached.
    lattice = rng.integers(0, 3, size=(6, 3)).astype(float)
    assert twin_test(lattice).p_value == pytest.approx(_enumerated(lattice))
    assert twin_test(np.array([[1.0, 0.0, 0.0]])).p_value == pytest.approx(1 / 3)
    # The served answer the best of every row: the exact tail, however many rows.
    best = np.column_stack([np.ones(40), rng.uniform(0, 0.9, size=(40, 2))])
    best[:5, 1] = 1.0  # five rows where a twin ties it
    tail = twin_test(best)
    assert tail.p_value == tail.p_bound == pytest.approx((1 / 3) ** 35 * (2 / 3) ** 5)
    # Rows that cannot tell the texts apart (identical twins) carry no evidence.
    assert twin_test(np.full((200, 3), 0.7)).p_value == 1.0
    flat = np.vstack([np.full((200, 4), 0.7), rng.normal(0.0, 1.0, size=(30, 4))])
    assert twin_test(flat).p_value == pytest.approx(twin_test(flat[200:]).p_value)
    # Two entries per row is the paired test's coin flip.
    d = rng.normal(0.5, 1.0, size=40)
    a, b = upper_tail(np.abs(d), d.sum() / 2, 0.5), choice_tail(np.column_stack([d, 0 * d]))
    assert b.p_value == pytest.approx(a.p_value, rel=1e-9) and b.z == pytest.approx(a.z)


def test_paired_test_matches_full_enumeration() -> None:
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.6, 1.2):
        d = rng.normal(shift, 1.0, size=14)
        signs = np.array(list(itertools.product((-1, 1), repeat=14)))
        exact = float(np.mean(signs @ np.abs(d) >= d.sum() - 1e-12))
        tail = paired_test(d)
        assert tail.p_bound >= exact
        assert tail.p_value == pytest.approx(exact, rel=0.35, abs=2e-3), (shift, exact, tail)
    assert paired_test(np.zeros(5)).p_value == 1.0


def test_a_student_of_the_served_answers_is_caught(world: dict[str, Any]) -> None:
    root, items = world["root"], read_served(world["db"], ["harvester"])
    fresh = replay(items, world["teacher"], seed=0)
    caught = likelihood_test(str(root / "student"), items, [fresh], accounts=["harvester"])
    assert caught.pairs == PROMPTS and caught.wins >= 80 and caught.p_value < 1e-6, caught
    assert caught.p_bound >= caught.p_value
    netted = likelihood_test(
        str(root / "student"),
        items,
        [fresh],
        accounts=["harvester"],
        baseline=str(root / "teacher"),
    )
    assert netted.p_value < 1e-6, netted
    # Three twins each: caught, and the control not.
    more = [fresh, replay(items, world["teacher"], seed=1), replay(items, world["teacher"], seed=2)]
    for name, caught_it in (("student", True), ("control", False)):
        r = likelihood_test(
            str(root / name), items, more, accounts=["h"], baseline=str(root / "teacher")
        )
        assert r.twins == 3 and r.queries == 4 * PROMPTS
        assert (r.p_value < 1e-6) if caught_it else (r.p_value > 0.001), (name, r)
    # The control learned the same questions from other draws of the same teacher. (One
    # instance of the null; the uniformity test below is the calibration.)
    for baseline in (None, str(root / "teacher")):
        r = likelihood_test(
            str(root / "control"), items, [fresh], accounts=["h"], baseline=baseline
        )
        assert r.p_value > 0.001, r
    # Black box: one greedy answer per served question.
    said = answers_test(
        LocalSuspect(str(root / "student")), items, [fresh], world["teacher"].tokenizer,
        accounts=["harvester"],
    )  # fmt: skip
    assert said.queries == PROMPTS and said.p_value < 1e-4, said
    plain = answers_test(
        LocalSuspect(str(root / "control")), items, [fresh], world["teacher"].tokenizer,
        accounts=["harvester"],
    )  # fmt: skip
    assert plain.p_value > 0.001, plain


def test_null_p_values_over_many_runs_are_uniform(world: dict[str, Any]) -> None:
    # 120 runs, each a new 'served' draw and its twin for 24 questions: the control never
    # saw either, whatever it learned from the same questions.
    items = read_served(world["db"], ["harvester"])[:24]
    control = LocalTeacher.load(str(world["root"] / "control"))
    tok = world["teacher"].tokenizer
    said = LocalSuspect(str(world["root"] / "control")).answer(
        [s.messages[0][1] for s in items], max_tokens=32, temperature=0.0, seed=0
    )
    messages = [s.messages for s in items]
    # One batched call: repeats of a request get draws of their own (sample_index).
    runs, k = 120, len(items)
    pool = replay(list(items) * (2 * runs), world["teacher"], seed=0)
    assert len(set(pool)) > 0.9 * len(pool)
    scores = answer_logprobs(control, messages * (2 * runs), pool)
    by_likelihood, by_answers = [], []
    for run in range(runs):
        a, b = 2 * run * k, (2 * run + 1) * k
        drawn, twins = pool[a:b], pool[b : b + k]
        by_likelihood.append(paired_test(scores[a:b] - scores[b : b + k]).p_value)
        overlap = [
            trigram_overlap(tok, x, y) - trigram_overlap(tok, x, z)
            for x, y, z in zip(said, drawn, twins, strict=True)
        ]
        by_answers.append(paired_test(np.array(overlap)).p_value)
    p = np.array(by_likelihood)
    assert stats.kstest(p, "uniform").pvalue > 0.001, np.sort(p)[:10]
    assert np.mean(p <= 0.01) <= 0.05
    # Three twins: 60 runs of 4 draws per question, the first taken as the served one.
    by_twins = [
        twin_test(scores[4 * run * k : 4 * (run + 1) * k].reshape(4, k).T).p_value
        for run in range(runs // 2)
    ]
    q3 = np.array(by_twins)
    assert stats.kstest(q3, "uniform").pvalue > 0.001, np.sort(q3)[:10]
    assert np.mean(q3 <= 0.01) <= 0.05
    # Overlaps tie often (both zero), so these p-values are discrete: check the tail only.
    q = np.array(by_answers)
    assert np.mean(q <= 0.01) <= 0.05 and np.mean(q <= 0.05) <= 0.12, np.sort(q)[:10]


def test_the_cli_gives_the_verdict_and_report(world: dict[str, Any], tmp_path: Path) -> None:
    root = world["root"]
    html, cache = tmp_path / "trace.html", tmp_path / "replays.jsonl"
    args = [
        "trace", str(root / "student"), "--served", world["db"], "--account", "harvester",
        "--key-file", str(root / "wm.json"), "--replay", str(root / "teacher"),
        "--replays", str(cache), "--no-radioactivity", "--no-probes", "--html", str(html),
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    verdict = json.loads(res.stdout)
    assert set(verdict) == {"suspect", "served"}
    got = verdict["served"]
    assert got["pairs"] == PROMPTS and got["p_value"] < 1e-6 and got["scoring"] == "likelihood"
    assert got["twins"] == 3 and got["queries"] == 4 * PROMPTS
    assert "learned from what these accounts received" in got["statement"]
    assert len(cache.read_text().splitlines()) == 3 * PROMPTS  # one row per answer and twin
    page = html.read_text()
    assert "did it train on what we served?" in page and "harvester" in page
    # Without the gateway's key the replays would not be exchangeable with what was served.
    keyless = [a for a in args if a not in ("--key-file", str(root / "wm.json"))]
    bad = CliRunner().invoke(app, keyless)
    assert isinstance(bad.exception, InputError) and "give --key-file" in str(bad.exception)


def test_options_that_cannot_work_are_refused_before_any_model_loads(
    world: dict[str, Any],
) -> None:
    base = ["trace", str(world["root"] / "student"), "--no-probes"]
    cases = [
        (["--served", world["db"], "--served-by", "answers", "--baseline", "x"], "drop --baseline"),
        (["--account", "harvester", "--key-file", str(world["root"] / "wm.json")], "add --served"),
        (["--served", world["db"], "--account", "nobody"], "no such account"),
    ]
    for extra, message in cases:
        res = CliRunner().invoke(app, base + extra)
        assert isinstance(res.exception, InputError) and message in str(res.exception), extra
        assert "Loading weights" not in res.output


def test_the_likelihood_test_runs_through_an_api_with_prompt_logprobs(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """The suspects behind a real gateway, read only through `echo` with `logprobs`."""
    from stillroom.trace.api_mass import LogprobsApi

    root, items = world["root"], read_served(world["db"], ["harvester"])
    fresh = replay(items, world["teacher"], seed=0)
    tok = world["teacher"].tokenizer
    results = {}
    for name in ("student", "control"):
        model = LocalTeacher.load(str(root / name), batch_size=16)
        engine = open_db(str(tmp_path / f"{name}.sqlite"))
        backend = LocalBackend(model, default_max_tokens=8, max_tokens_limit=64)
        key = acc.create_account(engine, "tracer")[1].key
        with running(create_app(engine, backend)) as url:
            api = LogprobsApi(url, backend.model_id, key, tok)
            results[name] = likelihood_test(
                name, items, [fresh], accounts=["harvester"], api=api, tokenizer=tok,
                baseline=str(root / "teacher"),
            )  # fmt: skip
        engine.dispose()
    caught, control = results["student"], results["control"]
    assert caught.pairs == PROMPTS and caught.p_value < 1e-6, caught
    assert control.p_value > 0.001, control
