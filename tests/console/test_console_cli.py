"""`stillroom console reviewers ...` and `stillroom audit` storing its run, from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from stillroom.audit import runs_store
from stillroom.cli import app
from stillroom.console import store
from stillroom.errors import InputError
from tests.console.conftest import Visitor

runner = CliRunner()


def test_reviewers_from_the_shell(engine: Engine) -> None:
    db = str(engine.url.database)
    added = runner.invoke(
        app, ["console", "reviewers", "add", "ana", "--role", "admin", "--db", db]
    )
    assert added.exit_code == 0, added.output
    made = json.loads(added.stdout)
    assert made["role"] == "admin" and made["token"].startswith(f"scr-{made['id']}-")
    listed = runner.invoke(app, ["console", "reviewers", "list", "--db", db])
    assert [r["name"] for r in json.loads(listed.stdout)["data"]] == ["ana"]
    assert made["token"] not in listed.stdout
    v = Visitor(engine)
    assert v.login(made["token"]).headers["location"] == "/"
    bad = runner.invoke(app, ["console", "reviewers", "add", "bo", "--role", "boss", "--db", db])
    assert bad.exit_code != 0 and "viewer, reviewer, admin" in str(bad.exception)
    off = runner.invoke(app, ["console", "reviewers", "disable", "ana", "--db", db])
    assert off.exit_code == 0
    assert v.get("/api/cases").status_code == 401
    assert Visitor(engine).login(made["token"]).headers["location"] == "/login?failed=1"
    nodb = runner.invoke(app, ["console", "reviewers", "list"])
    assert isinstance(nodb.exception, InputError) and "--db" in str(nodb.exception)


def test_the_audit_command_stores_its_run_in_the_gateway_db(
    engine: Engine, built: dict[str, Any]
) -> None:
    db = str(engine.url.database)
    res = runner.invoke(app, ["audit", db, "--fpr", "0.01", "--calibrate", str(built["benign"])])
    assert res.exit_code == 0, res.output
    assert "stored as audit run run_" in res.stderr
    with engine.connect() as conn:
        runs = conn.execute(sa.select(runs_store.runs.c.id)).scalars().all()
        cases = conn.execute(sa.select(sa.func.count()).select_from(runs_store.cases)).scalar()
    assert len(runs) == 2 and cases == len(built["result"].flagged)  # the same units: same cases


def test_a_trace_verdict_is_attached_to_a_case_and_shown(engine: Engine, tmp_path: Path) -> None:
    db = str(engine.url.database)
    v = Visitor(engine)
    store.add_reviewer(engine, "tess", "reviewer")
    store.add_reviewer(engine, "vera", "viewer")
    case_id = 1
    verdict = {
        "suspect": "rival-student",
        "radioactivity": {"p_value": 3.2e-11, "statement": "the suspect carries the watermark"},
        "output_match": {"p_value": 0.41, "statement": "its answers match no closer than chance"},
    }
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps(verdict))
    argv = ["console", "attach-trace", str(case_id), str(path), "--db", db]
    ok = runner.invoke(app, [*argv, "--reviewer", "tess"])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(app, [*argv, "--reviewer", "vera"])
    assert "is a viewer" in str(refused.exception)
    path.write_text(json.dumps({"hello": 1}))
    wrong = runner.invoke(app, [*argv, "--reviewer", "tess"])
    assert "not a trace verdict" in str(wrong.exception)
    token = store.add_reviewer(engine, "rex", "viewer")[1]
    v.login(token)
    page = v.get(f"/cases/{case_id}").text
    assert "rival-student" in page and "3.2e-11" in page and "carries the watermark" in page
    trail = v.get(f"/api/cases/{case_id}/trail").json()["data"]
    assert [(t["action"], t["reviewer"]) for t in trail] == [("attach trace", "tess")]


def test_the_console_command_serves_and_logs_no_secret(engine: Engine) -> None:
    import os
    import re
    import subprocess
    import sys
    import time

    import httpx

    from tests.helpers.serve import free_port

    db, port = str(engine.url.database), free_port()
    store.create_tables(engine)
    token = store.add_reviewer(engine, "sam", "reviewer")[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "stillroom", "console", "--db", db, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as c:
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
            c.post("/login", data={"csrf": csrf.group(1) if csrf else "", "token": token})
            session = c.cookies.get("stillroom_console")
            assert session and c.get("/api/cases").status_code == 200
            page = c.get("/cases/1").text
            form = re.search(r'name="csrf" value="([^"]+)"', page)
            note = {"csrf": form.group(1) if form else "", "reason": "seen from the shell"}
            assert c.post("/cases/1/note", data=note).status_code == 303
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "console on http://127.0.0.1" in err
    assert token not in out + err and token.split("-", 2)[2] not in out + err
    assert session not in out + err
