"""Harvest against a real local OpenAI-compatible HTTP server with injected faults."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stillroom.errors import TeacherFatalError, TeacherUnavailable
from stillroom.harvest.export import export_run
from stillroom.harvest.runner import dry_run, harvest
from stillroom.harvest.signals import decode_topk
from stillroom.harvest.store import RunStore
from stillroom.testing.fake_openai import FakeServerConfig, FaultRule, start_fake_server
from tests.helpers.harvest import api_config

pytestmark = pytest.mark.integration


def stored(cfg) -> list[dict]:  # type: ignore[no-untyped-def]
    store = RunStore.open_run(cfg.run_dir)
    try:
        return list(store.iter_records())
    finally:
        store.close()


def test_harvest_stores_every_call_and_a_rerun_makes_none(tmp_path: Path) -> None:
    with start_fake_server(FakeServerConfig()) as srv:
        cfg = api_config(tmp_path, srv.base_url, generation__n=2)
        result = harvest(cfg, show_progress=False)
        assert (result.called, result.ok, result.errors) == (20, 20, 0)
        assert srv.stats().total == 20
        records = stored(cfg)
        assert len(records) == 40  # n=2 choices per call
        assert {r["prompt_id"] for r in records} == {f"p{i}" for i in range(20)}
        sig = decode_topk(records[0]["topk"])
        tokens = json.loads(records[0]["tokens"])
        table = json.loads(records[0]["token_table"])
        assert sig.ids.shape == (len(tokens), 5)
        # The sampled token's string appears in the table the top-k ids index.
        assert all(t in table for t in tokens)
        assert np.all(np.diff(sig.logprobs, axis=1) <= 1e-6)

        again = harvest(cfg, show_progress=False)
        assert again.called == 0 and again.already_stored == 20
        assert srv.stats().total == 20


def test_transient_faults_are_retried_until_every_prompt_is_stored(tmp_path: Path) -> None:
    faults = [
        FaultRule("429", first=3, retry_after=0.05),
        FaultRule("500", every=5),
        FaultRule("drop", every=7),
        FaultRule("slow", every=11, delay=0.2),
    ]
    with start_fake_server(FakeServerConfig(faults=faults)) as srv:
        cfg = api_config(tmp_path, srv.base_url, n_prompts=30)
        result = harvest(cfg, show_progress=False)
        assert result.ok == 30 and result.errors == 0
        assert result.retries >= 3
        stats = srv.stats()
        assert stats.faults.get("429") == 3 and stats.faults.get("drop", 0) >= 1
    assert sorted(r["prompt_id"] for r in stored(cfg)) == sorted(f"p{i}" for i in range(30))


def test_fatal_status_stops_at_once_without_a_retry_storm(tmp_path: Path) -> None:
    with start_fake_server(FakeServerConfig(faults=[FaultRule("401")])) as srv:
        cfg = api_config(tmp_path, srv.base_url, n_prompts=50)
        with pytest.raises(TeacherFatalError, match=r"answered 401.*teacher.api_key_env"):
            harvest(cfg, show_progress=False)
        # At most one attempt per worker: nothing was retried.
        assert srv.stats().total <= cfg.teacher.concurrency
        assert max(srv.stats().counts.values()) == 1


def test_unreachable_endpoint_fails_clearly_after_the_retries(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = api_config(tmp_path, f"http://127.0.0.1:{port}/v1", n_prompts=3, teacher__max_retries=2)
    with pytest.raises(TeacherUnavailable, match=r"still failing after 2 retries"):
        harvest(cfg, show_progress=False)


def test_reply_missing_fields_is_an_error_row_and_the_run_goes_on(tmp_path: Path) -> None:
    with start_fake_server(FakeServerConfig(faults=[FaultRule("missing_fields", every=4)])) as srv:
        cfg = api_config(tmp_path, srv.base_url, n_prompts=20, teacher__concurrency=1)
        result = harvest(cfg, show_progress=False)
        assert (result.ok, result.errors) == (15, 5)
        assert harvest(cfg, show_progress=False).called == 0  # errors are stored, not redone
        srv.set_faults([])
        retried = harvest(cfg, show_progress=False, retry_errors=True)
        assert (retried.called, retried.ok) == (5, 5)
    store = RunStore.open_run(cfg.run_dir)
    assert (store.totals().ok, store.totals().errors) == (20, 0)
    store.close()


@pytest.mark.parametrize("seed", range(5))
def test_spend_never_exceeds_the_budget(tmp_path: Path, seed: int) -> None:
    with start_fake_server(FakeServerConfig(random_lengths=True, model_seed=seed)) as srv:
        budget = 0.003 + seed * 0.0013
        cfg = api_config(
            tmp_path,
            srv.base_url,
            n_prompts=200,
            generation__max_tokens=64,
            generation__seed=seed,
            cost__input_per_1m=1.0,
            cost__output_per_1m=10.0,
            cost__budget_usd=budget,
        )
        result = harvest(cfg, show_progress=False)
        assert result.stopped == "budget"
        assert 0 < result.ok < 200
        assert result.run_total_usd <= budget
        # A second invocation spends nothing more: the next worst case still does not fit.
        assert harvest(cfg, show_progress=False).run_total_usd <= budget


def test_limit_dry_run_and_export(tmp_path: Path) -> None:
    with start_fake_server(FakeServerConfig()) as srv:
        cfg = api_config(
            tmp_path, srv.base_url, n_prompts=12, cost__input_per_1m=1.0, cost__output_per_1m=2.0
        )
        est = dry_run(cfg)
        assert (est.calls_to_make, est.output_tokens_max) == (12, 12 * 8)
        assert est.cost_usd_max > 0
        assert srv.stats().total == 0
        assert harvest(cfg, limit=5, show_progress=False).ok == 5
        assert dry_run(cfg).already_stored == 5
        harvest(cfg, show_progress=False)
    path = export_run(cfg.run_dir, "parquet")
    table = pq.read_table(path)
    assert table.num_rows == 12
    row = table.slice(0, 1).to_pylist()[0]
    assert len(row["topk_ids"]) == len(row["tokens"]) and len(row["topk_ids"][0]) == 5
    lines = export_run(cfg.run_dir, "jsonl").read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[0])["text"]


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    import time

    faults = [FaultRule("429", first=1, retry_after=0.5)]
    with start_fake_server(FakeServerConfig(faults=faults)) as srv:
        cfg = api_config(tmp_path, srv.base_url, n_prompts=1, teacher__retry_backoff_s=0.001)
        start = time.perf_counter()
        result = harvest(cfg, show_progress=False)
        assert result.ok == 1 and result.retries == 1
        assert time.perf_counter() - start >= 0.5


def test_requests_per_minute_limit_paces_the_calls(tmp_path: Path) -> None:
    import time

    with start_fake_server(FakeServerConfig()) as srv:
        cfg = api_config(tmp_path, srv.base_url, n_prompts=20)
        start = time.perf_counter()
        harvest(cfg, show_progress=False)
        unlimited = time.perf_counter() - start
        # 600/min = 10/s with a one-second burst: 20 calls need at least ~1 s.
        cfg = api_config(
            tmp_path, srv.base_url, n_prompts=20, name="limited", teacher__requests_per_minute=600
        )
        start = time.perf_counter()
        harvest(cfg, show_progress=False)
        assert time.perf_counter() - start >= 0.9 > unlimited
