"""A real gateway database with simulated traffic, its accounts, and a stored audit run."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from stillroom.audit.run import audit
from stillroom.audit.simulate import simulate, write_benign_log
from stillroom.serve.accounts import create_key
from stillroom.serve.db import accounts, open_db, requests


def build_gateway(
    out: Path, *, db: str | None = None, n_accounts: int = 100, seed: int = 3
) -> dict[str, Any]:
    """The simulated log in a gateway database (`db`, or a new SQLite file under `out`),
    every account in its accounts table, one live key per distiller account, and one audit
    run recorded."""
    sim = simulate(out / "sim", accounts=n_accounts, seed=seed, days=3, volume=0.05)
    db_url = db or str(out / "gateway.sqlite")
    engine = open_db(db_url)
    rows = pq.read_table(sim["log"]).to_pylist()
    with engine.begin() as conn:
        conn.execute(requests.insert(), rows)
    labels = pq.read_table(sim["labels"]).to_pylist()
    with engine.begin() as conn:
        conn.execute(
            accounts.insert(),
            [
                {"id": r["account_id"], "name": f"{r['kind']}-{i}", "created_at": 0.0}
                for i, r in enumerate(labels)
            ],
        )
    keys = {
        r["account_id"]: create_key(engine, r["account_id"]).key
        for r in labels
        if r["label"] == "distiller"
    }
    benign = write_benign_log(sim, out / "benign.parquet")
    result = audit(db_url, fpr=0.01, calibrate=str(benign), record=True, log=lambda m: None)
    engine.dispose()
    return {"db": db_url, "labels": labels, "keys": keys, "result": result, "benign": benign}


def copy_sqlite(source: str, target: Path) -> str:
    """A consistent copy of a SQLite database (its WAL included), through SQLite's backup."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return str(target)
