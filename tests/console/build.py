"""A real gateway database with simulated traffic, its accounts, and a stored audit run."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from stillroom.audit.run import audit
from stillroom.audit.simulate import simulate, write_benign_log
from stillroom.serve.accounts import create_key
from stillroom.serve.db import accounts, open_db


def build_gateway(out: Path, *, n_accounts: int = 100, seed: int = 3) -> dict[str, Any]:
    """The simulated log in a SQLite gateway database, every account in its accounts table,
    one live key per distiller account, and one audit run recorded."""
    sim = simulate(out / "sim", accounts=n_accounts, seed=seed, days=3, volume=0.05)
    path = out / "gateway.sqlite"
    engine = open_db(str(path))
    con = duckdb.connect()
    rows = con.sql(f"SELECT * FROM read_parquet('{sim['log']}')").fetchall()
    con.close()
    db = sqlite3.connect(path)
    db.executemany(f"INSERT INTO requests VALUES ({','.join('?' * len(rows[0]))})", rows)
    db.commit()
    db.close()
    labels = pq.read_table(sim["labels"]).to_pylist()
    with engine.begin() as conn:
        conn.execute(
            accounts.insert(),
            [{"id": r["account_id"], "name": f"{r['kind']}-{i}", "created_at": 0.0}
             for i, r in enumerate(labels)],
        )  # fmt: skip
    keys = {
        r["account_id"]: create_key(engine, r["account_id"]).key
        for r in labels
        if r["label"] == "distiller"
    }
    benign = write_benign_log(sim, out / "benign.parquet")
    result = audit(str(path), fpr=0.01, calibrate=str(benign), record=True, log=lambda m: None)
    engine.dispose()
    return {"db": str(path), "labels": labels, "keys": keys, "result": result, "sim": sim}
