"""The console over a real SQLite gateway database: stored audit runs, the queue and case
pages, actions and their trail, and who may do what (FastAPI's TestClient, no mocks)."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stillroom.audit import runs_store
from stillroom.audit.run import audit
from stillroom.console.auth import COOKIE, ConsoleSettings
from stillroom.serve.accounts import get_account, lookup_key
from tests.console.conftest import Visitor, logged_in, reviewer


def cases_of(v: Visitor, query: str = "") -> dict[str, Any]:
    r = v.get(f"/api/cases{query}")
    assert r.status_code == 200, r.text
    return r.json()


def actor_case(v: Visitor) -> dict[str, Any]:
    return next(c for c in cases_of(v, "?min_accounts=2")["data"])


def test_an_audit_of_a_gateway_db_is_stored_as_a_run_and_its_cases(
    built: dict[str, Any], engine: Engine
) -> None:
    result = built["result"]
    with engine.connect() as conn:
        run = conn.execute(sa.select(runs_store.runs)).one()
        n_units = conn.execute(sa.select(sa.func.count()).select_from(runs_store.units)).scalar()
        n_cases = conn.execute(sa.select(sa.func.count()).select_from(runs_store.cases)).scalar()
        members = conn.execute(sa.select(runs_store.unit_accounts.c.account_id)).scalars().all()
    assert run.fpr == 0.01 and run.threshold == pytest.approx(result.threshold)
    assert run.flagged == n_units == n_cases == len(result.flagged) > 5
    assert set(members) == result.flagged_accounts()
    cal = json.loads(run.calibration)
    assert set(cal["percentiles"]) == set(cal["features"]) == set(result.calibration.features)
    assert runs_store.public_source("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    from stillroom.console.store import create_tables

    create_tables(engine)
    create_tables(engine)  # twice: nothing to do the second time
    with engine.connect() as conn:
        versions = dict(
            conn.execute(sa.text("SELECT component, version FROM stillroom_schema")).tuples().all()
        )
    assert versions == {"audit": 1, "console": 1}


def test_queue_lists_filters_and_names_a_bad_filter(engine: Engine, built: dict[str, Any]) -> None:
    v = logged_in(engine, "viewer")
    everything = cases_of(v)
    assert everything["total"] == len(built["result"].flagged)
    assert {c["status"] for c in everything["data"]} == {"new"}
    scores = [(c["severity"], -c["score"]) for c in everything["data"]]
    rank = {"high": 0, "medium": 1, "low": 2}
    assert scores == sorted(scores, key=lambda s: (rank[s[0]], s[1]))  # strongest first
    actors = cases_of(v, "?min_accounts=2")["data"]
    assert actors and all(c["n_accounts"] >= 2 for c in actors)
    member = runs_store_member(engine, actors[0]["unit"])
    found = cases_of(v, f"?q={member}")["data"]
    assert [c["unit"] for c in found] == [actors[0]["unit"]]  # an account finds its actor
    by_name = cases_of(v, "?q=hydra_thin-")["data"]  # the start of its accounts' names
    assert actors[0]["unit"] in [c["unit"] for c in by_name]
    assert cases_of(v, "?q=nobody-by-this-name")["total"] == 0
    for query, field in (
        ("?status=open", "status"),
        ("?severity=huge", "severity"),
        ("?min_accounts=0", "min_accounts"),
        ("?page=x", "page"),
    ):
        r = v.get(f"/api/cases{query}")
        assert r.status_code == 400 and r.json()["error"]["message"].startswith(field)
    page = v.get("/?severity=high")
    assert page.status_code == 200 and "sev-medium" not in page.text.split('id="cases"')[1]


def runs_store_member(engine: Engine, unit: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                sa.select(runs_store.unit_accounts.c.account_id).where(
                    runs_store.unit_accounts.c.unit == unit
                )
            ).first()[0]
        )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_case_page_shows_evidence_accounts_pictures_and_prompts(engine: Engine) -> None:
    v = logged_in(engine, "viewer")
    c = actor_case(v)
    page = v.get(f"/cases/{c['id']}")
    assert page.status_code == 200
    detail = v.get(f"/api/cases/{c['id']}").json()
    assert len(detail["accounts"]) == c["n_accounts"] >= 2
    for a in detail["accounts"]:
        assert a["account_id"] in page.text and a["known"] and a["blocked_at"] is None
    assert all(e.replace("'", "&#39;") in page.text for e in detail["evidence"])
    assert "acting as one" in detail["evidence"][0] and detail["links"]
    assert detail["recent"] and detail["examples"]
    assert 'src="/cases/{}/features.png"'.format(c["id"]) in page.text
    for kind in ("features", "timeline"):
        r = v.get(f"/cases/{c['id']}/{kind}.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        width, height = png_size(r.content)
        assert width > 400 and height > 200
    assert v.get(f"/cases/{c['id']}/other.png").status_code == 404
    assert v.get("/cases/999999").status_code == 404
    assert v.get("/api/cases/0").status_code == 422


def test_block_and_unblock_use_the_gateway_block_state_and_write_the_trail(
    engine: Engine, built: dict[str, Any]
) -> None:
    v = logged_in(engine, "reviewer")
    c = next(c for c in cases_of(v)["data"] if c["unit"] in built["keys"])
    key = built["keys"][c["unit"]]
    assert not lookup_key(engine, key).account.blocked
    csrf = v.csrf(f"/cases/{c['id']}")
    r = v.post(
        f"/cases/{c['id']}/block",
        {"csrf": csrf, "reason": "harvests long answers", "policy": "model-extraction"},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{c['id']}"
    blocked = lookup_key(engine, key).account
    assert blocked.blocked and blocked.blocked_reason == "policy: model-extraction"
    assert cases_of(v, "?status=blocked")["data"][0]["id"] == c["id"]
    r = v.post(f"/cases/{c['id']}/unblock", {"csrf": csrf, "reason": "customer appealed"})
    assert r.status_code == 303 and not get_account(engine, c["unit"]).blocked
    trail = v.get(f"/api/cases/{c['id']}/trail").json()["data"]
    assert [(t["action"], t["reviewer"], t["role"]) for t in trail] == [
        ("block", "reviewer-one", "reviewer"),
        ("unblock", "reviewer-one", "reviewer"),
    ]
    assert trail[0]["before"]["accounts"][c["unit"]]["blocked"] is False
    assert trail[0]["after"]["accounts"][c["unit"]]["blocked"] is True
    assert trail[0]["policy"] == "model-extraction" and trail[1]["reason"] == "customer appealed"
    exported = v.get(f"/trail.jsonl?case={c['id']}")
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line)["action"] for line in exported.text.splitlines()] == [
        "block",
        "unblock",
    ]
    page = v.get(f"/cases/{c['id']}").text
    assert "harvests long answers" in page and "customer appealed" in page


def test_bad_action_input_is_named_and_changes_nothing(engine: Engine) -> None:
    v = logged_in(engine, "reviewer")
    c = cases_of(v)["data"][0]
    csrf = v.csrf(f"/cases/{c['id']}")
    for data, field in (
        ({"reason": "x", "policy": "nope"}, "policy"),
        ({"reason": " ", "policy": "model-extraction"}, "reason"),
        ({"reason": "x" * 3000, "policy": "model-extraction"}, "reason"),
    ):
        r = v.post(f"/cases/{c['id']}/block", {"csrf": csrf, **data})
        assert r.status_code == 400 and field in r.text, r.text
    assert v.post(f"/cases/{c['id']}/explode", {"csrf": csrf}).status_code == 404
    assert cases_of(v)["data"][0]["status"] == "new"
    assert v.get(f"/api/cases/{c['id']}/trail").json()["data"] == []


def test_forms_without_the_csrf_token_are_refused(engine: Engine) -> None:
    v = logged_in(engine, "admin")
    c = cases_of(v)["data"][0]
    good = v.csrf(f"/cases/{c['id']}")
    for verb in ("block", "unblock", "dismiss", "note", "review", "reopen", "revoke"):
        for csrf in ({}, {"csrf": ""}, {"csrf": good[:-2] + "xx"}):
            data = {**csrf, "reason": "r", "policy": "model-extraction"}
            r = v.post(f"/cases/{c['id']}/{verb}", data)
            assert r.status_code == 403 and "CSRF" in r.text, (verb, csrf)
    assert v.post("/logout", {}).status_code == 403
    other = Visitor(engine)
    assert other.post("/login", {"token": "whatever"}).status_code == 403  # no login cookie
    assert cases_of(v)["data"][0]["status"] == "new"
    assert v.get(f"/api/cases/{c['id']}/trail").json()["data"] == []


def test_a_viewer_may_look_but_not_act(engine: Engine) -> None:
    v = logged_in(engine, "viewer")
    c = cases_of(v)["data"][0]
    page = v.get(f"/cases/{c['id']}").text
    assert 'id="block-form"' not in page
    csrf = v.csrf(f"/cases/{c['id']}")  # the logout form's: the viewer's own session token
    r = v.post(
        f"/cases/{c['id']}/block", {"csrf": csrf, "reason": "r", "policy": "model-extraction"}
    )
    assert r.status_code == 403 and "viewer" in r.text
    assert not get_account(engine, c["unit"].removeprefix("actor:")).blocked
    assert v.get(f"/api/cases/{c['id']}/trail").json()["data"] == []


def test_login_fails_closed_and_sessions_expire(engine: Engine) -> None:
    anonymous = Visitor(engine)
    assert anonymous.get("/", follow_redirects=False).headers["location"] == "/login"
    assert anonymous.get("/api/cases").status_code == 401
    assert anonymous.get("/cases/1/features.png", follow_redirects=False).status_code == 303
    r = anonymous.login("scr-rev_nobody-not-a-token")
    assert r.headers["location"] == "/login?failed=1"
    short = ConsoleSettings(session_hours=1.5 / 3600)  # 1.5 s
    v = logged_in(engine, "reviewer", short)
    assert v.get("/api/cases").status_code == 200
    time.sleep(1.7)
    assert v.get("/api/cases").status_code == 401
    assert v.get("/", follow_redirects=False).headers["location"] == "/login"
    idle = ConsoleSettings(session_hours=1.0, idle_minutes=1.2 / 60)  # unused for 1.2 s
    w = logged_in(engine, "reviewer", idle, "idle-one")
    for _ in range(4):  # in use: alive past the idle time
        time.sleep(0.5)
        assert w.get("/api/cases").status_code == 200
    time.sleep(1.5)
    assert w.get("/api/cases").status_code == 401


def test_a_disabled_reviewer_is_logged_out(engine: Engine) -> None:
    from stillroom.console.store import disable_reviewer

    v = logged_in(engine, "reviewer")
    disable_reviewer(engine, "reviewer-one")
    assert v.get("/api/cases").status_code == 401


def test_no_token_or_session_id_in_any_page_url_or_log(
    engine: Engine, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    v = Visitor(engine)
    token = reviewer(engine, "reviewer", "leaky")
    v.login(token)
    session_id = v.client.cookies.get(COOKIE)
    assert session_id
    c = cases_of(v)["data"][0]
    csrf = v.csrf(f"/cases/{c['id']}")
    v.post(f"/cases/{c['id']}/note", {"csrf": csrf, "reason": "looked at it"})
    for url in (
        "/",
        f"/cases/{c['id']}",
        "/trail",
        "/trail.jsonl",
        "/api/cases",
        f"/api/cases/{c['id']}",
        "/login",
        "/nowhere",
    ):
        v.get(url)
    out, err = capfd.readouterr()
    everything = "\n".join([*v.seen, caplog.text, out, err])
    secret = token.split("-", 2)[2]
    assert len(secret) >= 40  # the whole 32-byte secret, whatever characters it holds
    assert token not in everything and secret not in everything
    assert session_id not in everything
    with engine.connect() as conn:  # stored hashed, never plain
        stored = "\n".join(
            str(r)
            for t in ("console_reviewers", "console_sessions")
            for r in conn.execute(sa.text(f"SELECT * FROM {t}"))
        )
    assert secret not in stored and session_id not in stored


def test_the_trail_is_append_only_in_the_database(engine: Engine) -> None:
    v = logged_in(engine, "reviewer")
    c = cases_of(v)["data"][0]
    v.post(f"/cases/{c['id']}/note", {"csrf": v.csrf(f"/cases/{c['id']}"), "reason": "seen"})
    for statement in ("UPDATE console_trail SET reason = 'changed'", "DELETE FROM console_trail"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert v.get(f"/api/cases/{c['id']}/trail").json()["data"][0]["reason"] == "seen"


def test_a_dismissed_unit_is_known_benign_in_the_next_audit(
    engine: Engine, built: dict[str, Any]
) -> None:
    v = logged_in(engine, "reviewer")
    c = next(c for c in cases_of(v)["data"] if c["n_accounts"] == 1)
    csrf = v.csrf(f"/cases/{c['id']}")
    r = v.post(f"/cases/{c['id']}/dismiss", {"csrf": csrf, "reason": "a research customer"})
    assert r.status_code == 303
    said: list[str] = []
    db = str(engine.url.database)
    again = audit(db, fpr=0.01, calibrate=str(built["benign"]), record=True, log=said.append)
    assert any("count as known benign" in s for s in said)
    assert any("dismissed as benign" in w for w in again.warnings)
    assert c["unit"] not in {f["unit"] for f in again.flagged}
    with engine.connect() as conn:
        runs = conn.execute(sa.select(runs_store.runs).order_by(runs_store.runs.c.created_at))
        assert [r.known_benign for r in runs] == [0, 1]
    assert cases_of(v, "?status=dismissed")["data"][0]["id"] == c["id"]
    # reopening takes the accounts off the known-benign list, on the record
    v.post(f"/cases/{c['id']}/reopen", {"csrf": csrf, "reason": "it came back"})
    assert runs_store.known_benign_accounts(engine) == set()
    actions = [t["action"] for t in v.get(f"/api/cases/{c['id']}/trail").json()["data"]]
    assert actions == ["dismiss", "reopen"]


def test_a_blocked_case_must_be_unblocked_before_it_is_dismissed(engine: Engine) -> None:
    v = logged_in(engine, "reviewer")
    c = cases_of(v)["data"][0]
    csrf = v.csrf(f"/cases/{c['id']}")
    v.post(f"/cases/{c['id']}/block", {"csrf": csrf, "reason": "r", "policy": "terms-other"})
    r = v.post(f"/cases/{c['id']}/dismiss", {"csrf": csrf, "reason": "benign"})
    assert r.status_code == 400 and "unblock it" in r.text


def test_a_reviewer_revokes_one_key_of_the_case(engine: Engine, built: dict[str, Any]) -> None:
    v = logged_in(engine, "reviewer")
    c = next(c for c in cases_of(v)["data"] if c["unit"] in built["keys"])
    key = built["keys"][c["unit"]]
    key_id = lookup_key(engine, key).key_id
    page = v.get(f"/cases/{c['id']}").text
    assert key_id in page and key not in page  # the key's id is shown, never the key
    csrf = v.csrf(f"/cases/{c['id']}")
    other = next(k for a, k in built["keys"].items() if a != c["unit"])
    wrong = {"csrf": csrf, "key_id": lookup_key(engine, other).key_id, "reason": "x"}
    r = v.post(f"/cases/{c['id']}/revoke", wrong)
    assert r.status_code == 400 and "key_id" in r.text and lookup_key(engine, other)
    r = v.post(f"/cases/{c['id']}/revoke", {"csrf": csrf, "key_id": key_id, "reason": "leaked"})
    assert r.status_code == 303 and lookup_key(engine, key) is None
    assert not get_account(engine, c["unit"]).blocked  # the account itself is untouched
    (entry,) = v.get(f"/api/cases/{c['id']}/trail").json()["data"]
    assert entry["action"] == "revoke key" and entry["after"] == {"key": key_id, "live": False}


def test_accounts_pages_find_an_account_and_show_its_keys_usage_and_cases(
    engine: Engine, built: dict[str, Any]
) -> None:
    v = logged_in(engine, "viewer")
    c = next(c for c in cases_of(v)["data"] if c["unit"] in built["keys"])
    account = get_account(engine, c["unit"])
    found = v.get(f"/accounts?q={account.name}")
    assert found.status_code == 200 and f'href="/accounts/{account.id}"' in found.text
    assert "customer" not in v.get("/accounts?q=zzz-nobody").text.split('id="accounts"')[1]
    page = v.get(f"/accounts/{account.id}")
    assert page.status_code == 200 and f'href="/cases/{c["id"]}"' in page.text
    data = v.get(f"/api/accounts/{account.id}").json()
    assert data["requests"] == c["requests"] and [k["revoked_at"] for k in data["keys"]] == [None]
    assert [x["id"] for x in data["cases"]] == [c["id"]]
    usage = v.get(f"/accounts/{account.id}/timeline.png")
    assert usage.status_code == 200 and png_size(usage.content)[0] > 400
    assert v.get("/accounts/acct_nobody").status_code == 404
    assert v.get("/api/accounts/" + "x" * 81).status_code == 422


def test_a_prompt_is_shown_as_text_never_as_markup(engine: Engine, built: dict[str, Any]) -> None:
    from stillroom.serve.db import requests

    v = logged_in(engine, "viewer")
    c = next(c for c in cases_of(v)["data"] if c["unit"] in built["keys"])
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    with engine.begin() as conn:
        conn.execute(
            requests.insert().values(
                id="req_hostile",
                created_at=time.time(),
                account_id=c["unit"],
                endpoint="completions",
                prompt=hostile,
                params="{}",
                status=200,
            )
        )
    page = v.get(f"/cases/{c['id']}")
    assert (
        hostile not in page.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    )
    assert "script-src" not in page.headers["content-security-policy"]  # none allowed at all
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_blocking_a_dismissed_case_takes_it_off_the_known_benign_list(engine: Engine) -> None:
    v = logged_in(engine, "reviewer")
    c = next(c for c in cases_of(v)["data"] if c["n_accounts"] == 1)
    csrf = v.csrf(f"/cases/{c['id']}")
    v.post(f"/cases/{c['id']}/dismiss", {"csrf": csrf, "reason": "looked benign"})
    assert runs_store.known_benign_accounts(engine) == {c["unit"]}
    block = {"csrf": csrf, "reason": "it was not", "policy": "model-extraction"}
    assert v.post(f"/cases/{c['id']}/block", block).status_code == 303
    assert runs_store.known_benign_accounts(engine) == set()
    assert get_account(engine, c["unit"]).blocked


def test_known_benign_leaves_the_given_calibration_alone(built: dict[str, Any]) -> None:
    result = built["result"]
    cal, units = result.calibration, result.measured.units
    flagged = result.flagged[0]
    before = (cal.ref_scores.copy(), list(cal.notes), cal.screened_out)
    once, n = runs_store.with_known_benign(cal, units, flagged["accounts"])
    assert n == 1 and len(once.ref_scores) == len(cal.ref_scores) + 1
    assert once.ref_scores.max() == pytest.approx(flagged["score"])
    assert (cal.ref_scores.tolist(), cal.notes, cal.screened_out) == (
        before[0].tolist(),
        before[1],
        before[2],
    )
    twice, _ = runs_store.with_known_benign(once, units, flagged["accounts"])  # a watch's rerun
    assert len(twice.ref_scores) == len(once.ref_scores) and twice.notes == once.notes
    assert runs_store.with_known_benign(cal, units, ["acct_nobody"]) == (cal, 0)
