"""The console on a PostgreSQL gateway database: the audit stores its run there, and a
reviewer's block, unblock and dismissal work through it as on SQLite (skipped where no test
server is named in STILLROOM_TEST_PG_URL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from stillroom.audit import runs_store
from stillroom.audit.run import audit
from stillroom.serve.accounts import lookup_key
from stillroom.serve.db import open_db
from tests.console.build import build_gateway
from tests.console.conftest import logged_in

pytestmark = pytest.mark.integration


def test_review_on_a_postgresql_gateway(pg_database: str, tmp_path: Path) -> None:
    built = build_gateway(tmp_path, db=pg_database, n_accounts=60)
    engine = open_db(pg_database)
    try:
        v = logged_in(engine, "reviewer")
        listed = v.get("/api/cases").json()
        assert listed["total"] == len(built["result"].flagged) > 0
        c = next(c for c in listed["data"] if c["unit"] in built["keys"])
        page = v.get(f"/cases/{c['id']}")
        assert page.status_code == 200 and c["unit"] in page.text
        for kind in ("features", "timeline"):
            assert v.get(f"/cases/{c['id']}/{kind}.png").content[:4] == b"\x89PNG"
        csrf = v.csrf(f"/cases/{c['id']}")
        key = built["keys"][c["unit"]]
        block = {"csrf": csrf, "reason": "harvest", "policy": "automated-harvesting"}
        assert v.post(f"/cases/{c['id']}/block", block).status_code == 303
        assert lookup_key(engine, key).account.blocked
        unblock = {"csrf": csrf, "reason": "drill"}
        assert v.post(f"/cases/{c['id']}/unblock", unblock).status_code == 303
        assert not lookup_key(engine, key).account.blocked
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM console_trail"))
        dismiss = {"csrf": csrf, "reason": "customer"}
        assert v.post(f"/cases/{c['id']}/dismiss", dismiss).status_code == 303
        said: list[str] = []
        again = audit(
            pg_database, fpr=0.01, calibrate=str(built["benign"]), record=True, log=said.append
        )
        assert any("count as known benign" in s for s in said)
        assert c["unit"] not in {f["unit"] for f in again.flagged}
        trail = v.get(f"/api/cases/{c['id']}/trail").json()["data"]
        assert [t["action"] for t in trail] == ["block", "unblock", "dismiss"]
        with engine.connect() as conn:
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(runs_store.runs)).scalar() == 2
            )
    finally:
        engine.dispose()
