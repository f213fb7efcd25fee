"""`stillroom accounts` and `stillroom serve` argument checks, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from stillroom.serve.accounts import lookup_key
from stillroom.serve.db import open_db
from tests.helpers.replicas import gateway_process


def stillroom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stillroom", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_accounts_lifecycle_from_the_shell(tmp_path: Path) -> None:
    db = str(tmp_path / "g.sqlite")
    made = stillroom("accounts", "create", "acme", "--db", db, "--rpm", "60")
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    key = out["key"]
    engine = open_db(db)
    who = lookup_key(engine, key)
    assert who is not None and who.account.name == "acme" and who.account.rpm_limit == 60
    blocked = json.loads(stillroom("accounts", "block", "acme", "--db", db, "--reason", "x").stdout)
    assert blocked["blocked_at"] is not None and blocked["blocked_reason"] == "x"
    listed = stillroom("accounts", "list", "--db", db)
    assert key not in listed.stdout and json.loads(listed.stdout)[0]["name"] == "acme"
    new = json.loads(stillroom("accounts", "keys", "acme", "--new", "--db", db).stdout)
    revoked = stillroom("accounts", "keys", "acme", "--revoke", new["key_id"], "--db", db)
    assert json.loads(revoked.stdout)["revoked_at"] is not None
    assert lookup_key(engine, new["key"]) is None and lookup_key(engine, key) is not None
    dup = stillroom("accounts", "create", "acme", "--db", db)
    assert dup.returncode == 2 and "exists" in dup.stderr


def test_serve_refuses_contradictory_options(tmp_path: Path) -> None:
    neither = stillroom("serve", "--db", str(tmp_path / "g.sqlite"))
    assert neither.returncode == 2 and "exactly one of --model" in neither.stderr
    wm = stillroom("serve", "--upstream", "http://127.0.0.1:9/v1", "--watermark-key-file", "k")
    assert wm.returncode == 2 and "needs --model" in wm.stderr


def test_serve_flags_reach_the_gateway(tmp_path: Path) -> None:
    """`--max-body-bytes` and `--api-docs` from the shell, on a real `stillroom serve`."""
    db = str(tmp_path / "g.sqlite")
    key = json.loads(stillroom("accounts", "create", "acme", "--db", db).stdout)["key"]
    flags = ("--max-body-bytes", "2000", "--api-docs")
    with gateway_process("http://127.0.0.1:9/v1", db, *flags) as base:
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
        body = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
        refused = httpx.post(
            f"{base}/v1/chat/completions", json=body,
            headers={"Authorization": f"Bearer {key}"}, timeout=10,
        )  # fmt: skip
        assert refused.status_code == 413 and refused.json()["error"]["message"]
