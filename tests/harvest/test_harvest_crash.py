"""SIGKILL a harvest midway, rerun it: nothing lost, nothing asked twice."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stillroom.harvest.runner import harvest
from stillroom.harvest.store import RunStore
from stillroom.testing.fake_openai import FakeServerConfig, start_fake_server
from tests.helpers.harvest import api_config

pytestmark = pytest.mark.integration


def count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sigkill_then_rerun_stores_each_prompt_once_and_repeats_no_stored_call(
    tmp_path: Path,
) -> None:
    n = 150
    with start_fake_server(FakeServerConfig(latency=0.05)) as srv:
        cfg = api_config(tmp_path, srv.base_url, n_prompts=n)
        cfg_path = tmp_path / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        db = cfg.run_dir / "harvest.sqlite"
        proc = subprocess.Popen(
            [sys.executable, "-m", "stillroom", "harvest", str(cfg_path), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
        )
        deadline = time.monotonic() + 60
        while count_rows(db) < n // 3:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the harvest made no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Count what is stored once nothing holds the run folder's lock.
        with open(cfg.run_dir / ".harvest.lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fcntl.flock(lock, fcntl.LOCK_UN)

        store = RunStore.open_run(cfg.run_dir)
        before = {r["prompt_id"] for r in store.iter_records()}
        store.close()
        assert n // 3 <= len(before) < n, "kill should land midway"

        srv.reset_stats()
        result = harvest(cfg, show_progress=False)
        stats = srv.stats()

    # The rerun asked only for prompts that were not stored before the kill.
    # (A body of None is a request the killed client never finished sending.)
    bodies = [b for b in stats.bodies.values() if b is not None]
    asked = {body["messages"][0]["content"].split()[2] for body in bodies}
    assert not {f"p{i}" for i in map(int, asked)} & before
    assert result.already_stored == len(before)
    store = RunStore.open_run(cfg.run_dir)
    ids = [r["prompt_id"] for r in store.iter_records()]
    store.close()
    assert sorted(ids) == sorted(f"p{i}" for i in range(n))  # exactly one record each
