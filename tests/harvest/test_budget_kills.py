"""Kill a budgeted harvest again and again: what the teacher billed stays within the budget,
and the run total counts every call that may have been billed, twice-billed ones included."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from stillroom.config import HarvestConfig
from stillroom.harvest.runner import harvest
from stillroom.harvest.store import CallMeta, RunStore
from stillroom.prices import Price
from stillroom.teachers import make_teacher
from stillroom.teachers.base import Completion, Teacher, TeacherRequest, Usage
from stillroom.testing.fake_openai import FakeServerConfig, FaultRule, start_fake_server
from tests.helpers.harvest import api_config
from tests.helpers.kills import billed_usd, kill_and_rerun, write_config

PRICE = Price(1.0, 10.0)
PRICED = {"cost__input_per_1m": PRICE.input_per_1m, "cost__output_per_1m": PRICE.output_per_1m}


def budgeted_config(tmp_path: Path, base_url: str, seed: int, **over: object) -> HarvestConfig:
    return api_config(
        tmp_path,
        base_url,
        n_prompts=200,
        generation__max_tokens=64,
        generation__seed=seed,
        **PRICED,
        **over,
    )


@pytest.mark.integration
def test_sigkilled_cli_reruns_bill_no_more_than_the_budget(tmp_path: Path) -> None:
    budget = 0.04
    # Full-length answers: each call costs about its worst case, so spend forgotten after a
    # kill is not hidden by the slack of the reservations still counted.
    with start_fake_server(FakeServerConfig(latency=0.05)) as srv:
        cfg = budgeted_config(tmp_path, srv.base_url, seed=7)
        cfg_path = write_config(cfg, tmp_path / "cfg.yaml")
        landed, code = kill_and_rerun(cfg, cfg_path, budget, kills=3, rng=random.Random(7))
        billed = billed_usd(srv, PRICE)
    assert landed == 3 and code == 3  # every kill landed midway; the last run met the budget
    assert billed <= budget, f"billed ${billed:.5f} against a budget of ${budget}"


class Killed(Exception):
    """The process dies here: nothing after this point runs."""


class DiesAfterReplies:
    """A teacher whose process dies once `replies` answers have come back: the answer that
    arrives then is billed but never stored, and the calls still in flight are abandoned."""

    def __init__(self, inner: Teacher, replies: int) -> None:
        self.inner, self.left = inner, replies
        self.model, self.kind, self.concurrency = inner.model, inner.kind, inner.concurrency

    async def complete(self, request: TeacherRequest) -> Completion:
        answer = await self.inner.complete(request)
        self.left -= 1
        if self.left < 0:
            raise Killed
        return answer

    async def aclose(self) -> None:
        await self.inner.aclose()


def harvest_killed_after(cfg: HarvestConfig, replies: int) -> bool:
    """Whether the kill landed (False: the run ended first, at the budget)."""
    teacher = DiesAfterReplies(make_teacher(cfg.teacher), replies)
    try:
        harvest(cfg, teacher=teacher, show_progress=False)
    except Killed:
        return True
    return False


@pytest.mark.integration
@pytest.mark.parametrize("seed", range(5))
def test_no_schedule_of_kills_bills_more_than_the_budget(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    budget = rng.uniform(0.02, 0.05)
    server = FakeServerConfig(latency=0.02, random_lengths=True, model_seed=seed)
    with start_fake_server(server) as srv:
        cfg = budgeted_config(tmp_path, srv.base_url, seed, cost__budget_usd=budget)
        kills = [rng.randint(0, 12) for _ in range(rng.randint(2, 5))]
        landed = sum(harvest_killed_after(cfg, replies) for replies in kills)
        result = harvest(cfg, show_progress=False)
        billed = billed_usd(srv, PRICE)
    assert landed >= 1 and result.stopped == "budget"
    assert billed <= budget, f"billed ${billed:.5f} against a budget of ${budget:.5f}"
    assert billed <= result.run_total_usd <= budget


@pytest.mark.integration
def test_without_a_budget_the_run_total_counts_calls_billed_twice(tmp_path: Path) -> None:
    with start_fake_server(FakeServerConfig(latency=0.02, random_lengths=True)) as srv:
        cfg = api_config(tmp_path, srv.base_url, n_prompts=60, **PRICED)
        assert harvest_killed_after(cfg, 10) and harvest_killed_after(cfg, 10)
        result = harvest(cfg, show_progress=False)
        billed = billed_usd(srv, PRICE)
        assert srv.stats().duplicates(), "the kills should leave calls that are asked twice"
    assert result.stopped == "done"
    assert billed <= result.run_total_usd, f"billed ${billed:.5f}, total ${result.run_total_usd}"


@pytest.mark.integration
def test_redone_error_rows_keep_the_charge_of_their_first_try(tmp_path: Path) -> None:
    with start_fake_server(FakeServerConfig(faults=[FaultRule("missing_fields", every=4)])) as srv:
        cfg = api_config(tmp_path, srv.base_url, n_prompts=20, teacher__concurrency=1, **PRICED)
        first = harvest(cfg, show_progress=False)
        srv.set_faults([])
        redone = harvest(cfg, show_progress=False, retry_errors=True)
        billed = billed_usd(srv, PRICE)
    assert (first.errors, redone.ok) == (5, 5)
    assert redone.run_total_usd >= first.run_total_usd
    assert billed <= redone.run_total_usd


def meta(key: str) -> CallMeta:
    return CallMeta(key, f"p-{key}", 0, "train", {"prompt": key}, {})


def answer() -> Completion:
    return Completion([], Usage(10, 10), "m", 0.0)


def test_a_rerun_reserving_a_killed_call_again_keeps_the_first_reservation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "harvest.sqlite"
    killed = RunStore(path)
    killed.reserve("k", 0.5)  # sent, then the process died
    killed.close()
    rerun = RunStore(path)
    assert rerun.orphan_reservations() == 0.5
    rerun.reserve("k", 0.5)
    rerun.write_ok(meta("k"), answer(), 0.1)
    totals = rerun.totals()
    rerun.close()
    assert (totals.cost_usd, totals.orphaned_usd) == (0.1, 0.5)


# The schema as the previous release wrote it (migrations 1 and 2), frozen.
PREVIOUS_SCHEMA = """
CREATE TABLE calls (
    key TEXT PRIMARY KEY, prompt_id TEXT NOT NULL, sample_index INTEGER NOT NULL,
    split TEXT NOT NULL, request TEXT NOT NULL, fields TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')), error TEXT, model TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER, prompt_ids BLOB,
    cost_usd REAL NOT NULL DEFAULT 0, latency_s REAL, compute_s REAL, created_at REAL NOT NULL
);
CREATE INDEX calls_split ON calls (split, status);
CREATE TABLE completions (
    call_key TEXT NOT NULL REFERENCES calls (key) ON DELETE CASCADE, choice INTEGER NOT NULL,
    text TEXT NOT NULL, finish_reason TEXT, token_ids BLOB, tokens TEXT, token_logprobs BLOB,
    topk BLOB, token_table TEXT, label_logprobs BLOB, PRIMARY KEY (call_key, choice)
);
CREATE TABLE reservations (
    key TEXT PRIMARY KEY, usd REAL NOT NULL, orphaned INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL
);
INSERT INTO calls (key, prompt_id, sample_index, split, request, status, cost_usd, created_at)
    VALUES ('done', 'p0', 0, 'train', '{}', 'ok', 0.25, 0);
INSERT INTO reservations VALUES ('old-kill', 0.5, 1, 0), ('last-kill', 0.75, 0, 0);
PRAGMA user_version = 2;
"""


def test_a_store_from_the_previous_schema_opens_and_keeps_its_spend(tmp_path: Path) -> None:
    path = tmp_path / "harvest.sqlite"
    with sqlite3.connect(path) as con:
        con.executescript(PREVIOUS_SCHEMA)
    store = RunStore(path)
    assert store.orphan_reservations() == 1.25
    store.reserve("last-kill", 0.75)  # the call left in flight is asked again
    store.write_ok(meta("last-kill"), answer(), 0.125)
    totals = store.totals()
    store.close()
    assert (totals.ok, totals.cost_usd, totals.orphaned_usd) == (2, 0.375, 1.25)
