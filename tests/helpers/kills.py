"""Kill a harvest at random points and rerun it; price what the fake teacher received.

Shared by the budget tests and `benchmarks/harvest_budget_kills.py`.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from stillroom.config import HarvestConfig
from stillroom.prices import Price
from stillroom.testing.fake_openai import FakeServer

SRC = Path(__file__).parents[2] / "src"


def billed_usd(srv: FakeServer, price: Price) -> float:
    """What the teacher billed: every request it received, each priced by the usage the
    server answers it with (its replies depend on the body only, so asking again tells)."""
    stats = srv.stats()
    # A body the killed client never finished sending was never answered: not billed.
    bodies = {h: b for h, b in stats.bodies.items() if b is not None}
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:

        def cost(body: dict[str, Any]) -> float:
            path = "/chat/completions" if "messages" in body else "/completions"
            usage = client.post(path, json=body).raise_for_status().json()["usage"]
            return price.cost(usage["prompt_tokens"], usage["completion_tokens"])

        with ThreadPoolExecutor(16) as pool:
            costs = dict(zip(bodies, pool.map(cost, bodies.values()), strict=True))
    return sum(stats.counts[h] * c for h, c in costs.items())


def stored_calls(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def write_config(cfg: HarvestConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def start_cli(cfg_path: Path, budget: float | None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "stillroom", "harvest", str(cfg_path), "--quiet"]
    if budget is not None:
        args += ["--budget", str(budget)]
    return subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )


def kill_after(proc: subprocess.Popen[bytes], db: Path, calls: int, pause_s: float) -> bool:
    """SIGKILL the harvest once `calls` rows are stored, `pause_s` later; False if it ended
    first (done, or stopped at the budget)."""
    deadline = time.monotonic() + 60
    while stored_calls(db) < calls:
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the harvest made no progress")
        time.sleep(0.005)
    time.sleep(pause_s)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def wait_for_lock_release(run_dir: Path) -> None:
    with open(run_dir / ".harvest.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_UN)


def kill_and_rerun(
    cfg: HarvestConfig, cfg_path: Path, budget: float | None, kills: int, rng: random.Random
) -> tuple[int, int]:
    """Run the CLI, SIGKILL it `kills` times a few calls after each restart, then let a last
    run finish. Returns (kills that landed, the last run's exit code)."""
    db = cfg.run_dir / "harvest.sqlite"
    landed = 0
    for _ in range(kills):
        proc = start_cli(cfg_path, budget)
        if not kill_after(proc, db, stored_calls(db) + rng.randint(2, 12), rng.uniform(0, 0.03)):
            return landed, finished(proc)
        landed += 1
        wait_for_lock_release(cfg.run_dir)
    return landed, finished(start_cli(cfg_path, budget))


def finished(proc: subprocess.Popen[bytes]) -> int:
    """Wait for a harvest to end by itself: done (0) or stopped at the budget (3)."""
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 3), err.decode()
    return proc.returncode


def train_until_checkpoint(
    cfg: HarvestConfig, step: int, timeout_s: float = 120
) -> subprocess.Popen[bytes]:
    """`stillroom train` on `cfg` in a child process, returned once its checkpoint of `step`
    is whole on disk (the child keeps training)."""
    path = cfg.run_dir / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillroom", "train", str(path), "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    state = cfg.run_dir / "checkpoints" / f"step-{step:06d}" / "trainer_state.pt"
    deadline = time.monotonic() + timeout_s
    while not state.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, f"no checkpoint at step {step} within {timeout_s} s"
        time.sleep(0.01)
    return proc
