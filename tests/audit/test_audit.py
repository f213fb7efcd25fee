"""`stillroom audit` and `simulate-traffic`: small simulated logs, every input kind, bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stillroom.audit import text
from stillroom.audit.ingest import parse_map
from stillroom.audit.run import audit, decide, measure
from stillroom.audit.score import fit, score, self_calibrate, tail_threshold
from stillroom.audit.simulate import simulate, write_benign_log
from stillroom.cli import app
from stillroom.errors import InputError

runner = CliRunner()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sim")
    return simulate(out, accounts=150, seed=3, days=3, volume=0.05)


@pytest.fixture(scope="module")
def benign_log(sim: dict[str, Any]) -> str:
    """The simulated log's benign accounts alone: a known-benign log to calibrate on."""
    return str(write_benign_log(sim, Path(sim["log"]).with_name("benign.parquet")))


@pytest.fixture(scope="module")
def embedder() -> text.Embedder:
    return text.Embedder()


def labels(m: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {r["account_id"]: r for r in pq.read_table(m["labels"]).to_pylist()}


def test_simulator_writes_the_gateway_schema_and_separate_labels(sim: dict[str, Any]) -> None:
    from stillroom.serve.db import requests

    table = pq.read_table(sim["log"])
    assert table.column_names == [c.name for c in requests.columns]
    assert table.num_rows == sim["requests"] > 5000
    assert "kind" not in table.column_names and "label" not in table.column_names
    row = table.slice(0, 1).to_pylist()[0]
    assert isinstance(json.loads(row["params"])["n"], int)
    lab = labels(sim)
    assert set(lab) == set(table.column("account_id").to_pylist())
    assert {r["label"] for r in lab.values()} == {"benign", "distiller"}


def test_simulator_is_seeded(tmp_path: Path) -> None:
    a = simulate(tmp_path / "a", accounts=20, seed=9, days=2, volume=0.02)
    b = simulate(tmp_path / "b", accounts=20, seed=9, days=2, volume=0.02)
    assert pq.read_table(a["log"]).equals(pq.read_table(b["log"]))


def test_audit_links_hydra_and_flags_distillers(
    sim: dict[str, Any], embedder: text.Embedder
) -> None:
    lab = labels(sim)
    m = measure(sim["log"], embedder=embedder, accounts_table=sim["accounts_table"])
    thin = [a for a, r in lab.items() if r["kind"] == "hydra_thin"]
    unit = m.units[m.links.units[thin[0]]]
    assert sorted(unit["members"]) == sorted(thin)  # /24 block + system prompt: one actor
    # the other hydra's address pools share only a card or a throwaway domain across pools,
    # one family: a unit per pool, each with siblings
    for unit in {m.links.units[a] for a, r in lab.items() if r["kind"] == "hydra"}:
        assert len(m.units[unit]["members"]) > 1
    for f in m.units.values():  # no unit joins a customer to a distiller
        assert len({lab[a]["label"] for a in f["members"]}) == 1
    # calibrated on the log's benign units, as on a provider's known-benign log
    benign = [f for f in m.units.values() if all(lab[a]["label"] == "benign" for a in f["members"])]
    r = decide(m, fit(benign), 0.01)
    flagged = r.flagged_accounts()
    bulk = [a for a, x in lab.items() if x["kind"] in ("bulk_harvest", "cot_extraction")]
    assert set(bulk) <= flagged and set(thin) <= flagged
    for f in r.flagged:
        assert f["evidence"] and f["examples"] and f["score"] > r.threshold


def test_min_requests_keeps_small_accounts_unflagged(
    sim: dict[str, Any], embedder: text.Embedder
) -> None:
    m = measure(sim["log"], embedder=embedder)
    lab = labels(sim)
    cal = fit([f for f in m.units.values() if lab[f["members"][0]]["label"] == "benign"])
    every = decide(m, cal, 0.01)
    sizes = sorted(m.units[f["unit"]]["requests"] for f in every.flagged)
    cut = sizes[len(sizes) // 2]  # half the flagged units fall below this
    gated = decide(m, cal, 0.01, min_requests=cut)
    assert {f["unit"] for f in gated.flagged} == {
        f["unit"] for f in every.flagged if m.units[f["unit"]]["requests"] >= cut
    }
    assert gated.scores == every.scores and gated.threshold == every.threshold
    assert 0 < len(gated.flagged) < len(every.flagged)


def test_score_is_zero_inside_the_benign_population_and_needs_several_features() -> None:
    feats = ["a", "b", "c"]
    units = [{"a": float(i % 7), "b": (i % 5) / 5, "c": float(i % 3)} for i in range(60)]
    cal = fit(units, feats)
    s, _ = score(
        cal,
        [
            {"a": 3.0, "b": 0.2, "c": 1.0},  # ordinary
            {"a": 90.0, "b": 0.2, "c": 1.0},  # extreme on one feature only
            {"a": 20.0, "b": 5.0, "c": 9.0},  # above the ordinary on all three
            {"a": 40.0, "b": 9.0, "c": 19.0},  # further still
        ],
    )
    assert s[0] == 0.0 and s[1] == 0.0  # no single feature decides
    assert s[2] > cal.threshold(0.01)
    assert s[3] == s[2]  # each feature's excess is capped
    assert cal.threshold(0.001) >= cal.threshold(0.01)


def test_evidence_cites_a_feature_only_above_the_percentile_it_quotes() -> None:
    from stillroom.audit.report import evidence_lines

    feats = ["frac_cot", "prompt_exclusivity"]
    units = [{"frac_cot": i / 100, "prompt_exclusivity": i / 100} for i in range(100)]
    cal = fit(units, feats)
    unit = {"members": ["a"], "frac_cot": 0.95, "prompt_exclusivity": 0.2}
    lines = evidence_lines(unit, feats, cal, None)
    assert len(lines) == 1 and "benign 90th percentile 89%" in lines[0]


def test_tail_threshold_is_an_upper_confidence_bound_on_the_quantile() -> None:
    rng = np.random.default_rng(0)
    true = np.log(1 / 0.01)  # the 99th percentile of Exp(1)
    below = [tail_threshold(rng.exponential(1.0, 2000), 0.01) < true for _ in range(300)]
    assert 0.02 < np.mean(below) <= 0.13  # about 1 - CONFIDENCE of the time, not half
    s = rng.exponential(1.0, 400)
    assert tail_threshold(s, 0.01) >= np.quantile(s, 0.99)
    assert tail_threshold(s, 0.0001) > s.max()  # past the data: the exponential tail
    assert tail_threshold(s, 0.0001) == pytest.approx(np.log(1e4), rel=0.25)


def test_self_calibration_is_not_fooled_by_harvesters_that_look_alike() -> None:
    """Twelve harvesters far above 600 benign units on every feature: the screen finds the
    gap and leaves them out of the reference, so they are flagged and the rate holds."""
    rng = np.random.default_rng(1)
    feats = ["a", "b", "c", "d"]
    benign = [dict(zip(feats, rng.normal(0, 1, 4).tolist(), strict=True)) for _ in range(600)]
    bad = [
        dict(zip(feats, (6.0 + rng.normal(0, 0.05, 4)).tolist(), strict=True)) for _ in range(12)
    ]
    units = benign + bad
    cal = self_calibrate(units, feats)
    assert cal.screened_out == 12 and cal.gap is not None
    s, _ = score(cal, units)
    thr = cal.threshold(0.003)
    assert (s[600:] > thr).all()
    assert (s[:600] > thr).sum() <= 0.003 * 600 + 1
    assert cal.warnings(0.01) == []
    assert "fewer than the 3,000" in cal.warnings(0.001)[0]  # 600 units cannot show 0.1%


def test_self_calibration_warns_when_no_gap_separates_the_tail() -> None:
    rng = np.random.default_rng(2)
    feats = ["a", "b", "c"]
    units = [dict(zip(feats, rng.normal(0, 1, 3).tolist(), strict=True)) for _ in range(2000)]
    cal = self_calibrate(units, feats)
    assert cal.screened_out == 0 and cal.gap is None
    assert any("no gap" in w for w in cal.warnings(0.01))


def test_template_reuse_sees_a_template_and_not_free_text() -> None:
    tpl = [
        f"Classify this ticket as billing or other. Ticket: {w} {w}s"
        for w in ("refund", "crash", "login", "invoice", "password", "upgrade", "charge", "bug")
    ]
    free = [
        "how do plants grow",
        "best pizza in rome?",
        "fix my bike chain",
        "what is entropy",
        "write a haiku about rain",
        "why is the sky blue",
        "tips for a job interview",
        "explain tcp handshakes",
    ]
    assert text.template_features(tpl)[0] == 1.0
    assert text.template_features(free)[0] == 0.0


def test_prompt_of_reads_chat_and_completion_rows() -> None:
    chat = json.dumps([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])
    assert text.prompt_of(chat, "chat.completions") == "hi"
    assert text.prompt_of("plain prompt", "completions") == "plain prompt"
    assert text.prompt_of('["a", "b"]', "completions") == "a"


def test_cli_table_json_html(sim: dict[str, Any], tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["audit", sim["log"], "--fpr", "0.01", "--html", str(html)])
    assert res.exit_code == 0, res.output
    assert "units flagged at FPR 0.01" in res.stdout
    assert "<h1>stillroom audit</h1>" in html.read_text()
    res = runner.invoke(app, ["audit", sim["log"], "--format", "json", "--fpr", "0.01"])
    data = json.loads(res.stdout)
    assert data["input"]["rows"] == sim["requests"] and data["input"]["garbage_total"] == 0


def test_cli_simulate_traffic(tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["simulate-traffic", "--out", str(tmp_path), "--accounts", "15", "--days", "1"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "requests.parquet").exists() and (tmp_path / "labels.parquet").exists()
    bad = runner.invoke(app, ["simulate-traffic", "--out", str(tmp_path), "--accounts", "3"])
    assert isinstance(bad.exception, InputError)


def _gateway_db(sim: dict[str, Any], path: Path) -> None:
    """The simulated log inside a real gateway database (the serve schema)."""
    from stillroom.serve.db import open_db

    open_db(str(path)).dispose()
    con = duckdb.connect()
    rows = con.sql(f"SELECT * FROM read_parquet('{sim['log']}')").fetchall()
    db = sqlite3.connect(path)
    db.executemany(f"INSERT INTO requests VALUES ({','.join('?' * len(rows[0]))})", rows)
    db.commit()
    db.close()


def test_gateway_db_source_and_block(sim: dict[str, Any], benign_log: str, tmp_path: Path) -> None:
    from stillroom.serve.accounts import get_account
    from stillroom.serve.db import open_db

    path = tmp_path / "gateway.sqlite"
    _gateway_db(sim, path)
    parquet = audit(sim["log"], fpr=0.01, calibrate=benign_log)
    db = audit(str(path), fpr=0.01, calibrate=benign_log)
    assert db.flagged_accounts() == parquet.flagged_accounts() != set()
    # --block: the flagged accounts exist in the gateway's accounts table (made here), then
    # the audit blocks them with its evidence as the reason.
    engine = open_db(str(path))
    from stillroom.serve.db import accounts

    with engine.begin() as conn:
        for i, a in enumerate(sorted(db.flagged_accounts())):
            conn.execute(accounts.insert().values(id=a, name=f"x{i}", created_at=0.0))
    res = runner.invoke(
        app, ["audit", str(path), "--fpr", "0.01", "--calibrate", benign_log, "--block"]
    )
    assert res.exit_code == 0, res.output
    some = sorted(db.flagged_accounts())[0]
    blocked = get_account(engine, some)
    # The gateway repeats the reason to the client: a policy tag, never the evidence.
    assert blocked.blocked and blocked.blocked_reason == "audit: policy: model-extraction"
    assert not any(e[:20] in blocked.blocked_reason for f in db.flagged for e in f["evidence"])


def test_jsonl_with_column_map_and_nested_params(sim: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    duckdb.connect().execute(
        f"COPY (SELECT * EXCLUDE (created_at, params), created_at AS ts, "
        f"CAST(params AS JSON) AS params FROM read_parquet('{sim['log']}')) "
        f"TO '{path}' (FORMAT json)"
    )
    res = audit(str(path), mapping=parse_map(["ts=created_at"]), fpr=0.01)
    ref = audit(sim["log"], fpr=0.01)
    assert res.flagged_accounts() == ref.flagged_accounts()


def _write(tmp_path: Path, sql: str, name: str = "bad.parquet") -> str:
    path = tmp_path / name
    duckdb.connect().execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    return str(path)


def test_missing_columns_are_named_with_the_fix(tmp_path: Path) -> None:
    path = _write(tmp_path, "SELECT 1.0 AS ts, 'a' AS account_id")
    with pytest.raises(
        InputError, match=r"missing columns created_at, params, messages or prompt.*--map"
    ):
        audit(path)


def test_wrong_types_and_empty_logs_get_clear_errors(sim: dict[str, Any], tmp_path: Path) -> None:
    bad_type = _write(
        tmp_path,
        f"SELECT * REPLACE (created_at > 0 AS created_at) "
        f"FROM read_parquet('{sim['log']}') LIMIT 10",
    )
    with pytest.raises(InputError, match=r"column 'created_at' has type BOOLEAN"):
        audit(bad_type)
    empty = _write(tmp_path, f"SELECT * FROM read_parquet('{sim['log']}') LIMIT 0", "e.parquet")
    with pytest.raises(InputError, match="empty"):
        audit(empty)
    with pytest.raises(InputError, match="no such log"):
        audit(str(tmp_path / "nope.parquet"))
    with pytest.raises(InputError, match="OLD=NEW"):
        parse_map(["nonsense"])
    res = runner.invoke(app, ["audit", empty])
    assert res.exit_code != 0 and isinstance(res.exception, InputError)


def test_garbage_rows_are_counted_not_fatal(sim: dict[str, Any], tmp_path: Path) -> None:
    src = f"read_parquet('{sim['log']}')"
    path = _write(
        tmp_path,
        f"""
        SELECT * REPLACE (CAST(created_at AS VARCHAR) AS created_at) FROM {src}
        UNION ALL SELECT * REPLACE ('not a time' AS created_at) FROM (SELECT * FROM {src} LIMIT 7)
        UNION ALL SELECT * REPLACE (CAST(created_at AS VARCHAR) AS created_at, '{{oops' AS params)
          FROM (SELECT * FROM {src} LIMIT 5)
        UNION ALL SELECT * REPLACE (CAST(created_at AS VARCHAR) AS created_at, -3 AS prompt_tokens)
          FROM (SELECT * FROM {src} LIMIT 4)""",
    )
    r = audit(path, fpr=0.01)
    assert r.measured.stats.garbage == {
        "created_at missing or not a time": 7,
        "params not JSON": 5,
        "negative token count": 4,
    }
    assert r.measured.stats.used == sim["requests"]


def _tiny_log(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    import pyarrow as pa

    path = tmp_path / "tiny.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _load(path: str, tmp_path: Path) -> Any:
    from stillroom.audit import ingest
    from stillroom.audit.engine import DuckDBEngine

    eng = DuckDBEngine()
    ingest.load(eng, ingest.resolve(path, tmp_path), {}, tmp_path)
    return eng


def test_params_are_read_and_chain_of_thought_is_found_case_blind(tmp_path: Path) -> None:
    chat = '{"n":3,"temperature":0.5,"max_tokens":100,"logprobs":true,"top_logprobs":5}'
    rows = [
        {"created_at": 1.0, "account_id": "a", "params": chat, "prompt": None,
         "messages": json.dumps([{"role": "user", "content": "Let's think STEP by step: 2+2"}])},
        {"created_at": 2.0, "account_id": "a", "params": '{"logprobs":2,"echo":false}',
         "messages": None, "prompt": "The capital of France is"},
        {"created_at": 3.0, "account_id": "a", "params": "{}", "prompt": None,
         "messages": json.dumps([{"role": "user", "content": "Explain your thinking."}])},
    ]  # fmt: skip
    eng = _load(_tiny_log(tmp_path, rows), tmp_path)
    got = eng.rows(
        "SELECT n, temperature, max_tokens, logprobs, top_logprobs, cot FROM log ORDER BY ts"
    )
    eng.close()
    assert got[0] == {"n": 3.0, "temperature": 0.5, "max_tokens": 100.0, "logprobs": 1,
                      "top_logprobs": 5.0, "cot": 1}  # fmt: skip
    assert got[1]["logprobs"] == 1 and got[1]["top_logprobs"] == 2.0 and got[1]["n"] == 1.0
    assert got[1]["cot"] == 0 and got[1]["temperature"] is None
    assert got[2]["cot"] == 1 and got[2]["logprobs"] == 0


def test_prompt_exclusivity_sees_prompts_other_accounts_send(tmp_path: Path) -> None:
    from stillroom.audit.features import unit_features

    items = [f"Question {i}: which is larger, {i} or {i + 1}?" for i in range(6)]
    rows = [
        {"created_at": float(t), "account_id": acct, "params": "{}", "messages": None,
         "prompt": p}
        for t, (acct, p) in enumerate(
            [("eval1", p) for p in items] + [("eval2", p) for p in items]
            + [("own", f"my private prompt number {i}") for i in range(4)] + [("own", items[0])]
        )
    ]  # fmt: skip
    eng = _load(_tiny_log(tmp_path, rows), tmp_path)
    f = unit_features(eng, {})
    eng.close()
    assert f["eval1"]["prompt_exclusivity"] == 0.0 == f["eval2"]["prompt_exclusivity"]
    assert f["own"]["prompt_exclusivity"] == pytest.approx(4 / 5)
    # accounts joined into one actor: their common prompts are the actor's own
    eng = _load(_tiny_log(tmp_path, rows), tmp_path)
    g = unit_features(eng, {"eval1": "actor:e", "eval2": "actor:e"})
    eng.close()
    assert g["actor:e"]["prompt_exclusivity"] == pytest.approx(5 / 6)


def test_incremental_state_reads_only_new_rows_and_matches_a_full_audit(
    sim: dict[str, Any], benign_log: str, tmp_path: Path
) -> None:
    import pyarrow.compute as pc

    times = pq.read_table(sim["log"], columns=["created_at"]).column("created_at")
    lo, hi = pc.min(times).as_py(), pc.max(times).as_py()
    state = tmp_path / "audit.state"
    steps = [lo + (hi - lo) * f for f in (0.4, 0.7)] + [None]
    known = audit(benign_log, fpr=0.01).calibration  # a known-benign reference, made once
    runs = [audit(sim["log"], fpr=0.01, until=u, state=state, calibration=known) for u in steps]
    full = audit(sim["log"], fpr=0.01, calibration=known)
    assert runs[-1].flagged_accounts() == full.flagged_accounts() != set()
    assert runs[-1].scores == pytest.approx(full.scores)
    last = runs[-1].measured.stats
    assert last.rows < sim["requests"] / 2  # the last run read only the rows since the second
    first = {a: f["first_flagged"] for r in runs for f in r.flagged for a in f["accounts"]}
    for f in runs[-1].flagged:  # a first flag never moves later, and lies inside the log
        assert lo <= f["first_flagged"] <= hi
        assert f["first_flagged"] == min(first[a] for a in f["accounts"])
    again = audit(sim["log"], fpr=0.01, state=state, calibration=known)  # nothing new
    assert again.measured.stats.rows < 10  # only the newest instant, read again and de-duplicated
    assert again.flagged_accounts() == full.flagged_accounts()
    assert again.scores == pytest.approx(full.scores)


def test_accounts_table_may_list_accounts_with_no_traffic(
    sim: dict[str, Any], embedder: text.Embedder, tmp_path: Path
) -> None:
    table = pq.read_table(sim["accounts_table"]).to_pylist()
    card = table[0]["payment_fingerprint"]
    extra = [{**table[0], "account_id": f"idle_{i}", "payment_fingerprint": card} for i in range(3)]
    path = tmp_path / "accounts.parquet"
    pq.write_table(pa.Table.from_pylist(table + extra), path)
    m = measure(sim["log"], embedder=embedder, accounts_table=str(path))
    assert not any(a.startswith("idle_") for a in m.links.units)


def test_accounts_table_problems_are_named(sim: dict[str, Any], tmp_path: Path) -> None:
    bad = _write(tmp_path, "SELECT 'a' AS who, 1.0 AS created_at", "acc.parquet")
    with pytest.raises(InputError, match="no account_id column.*who"):
        audit(sim["log"], accounts_table=bad)
    with pytest.raises(InputError, match="no such file"):
        audit(sim["log"], accounts_table=str(tmp_path / "missing.parquet"))


def test_cli_state_shows_first_flag_times_and_refuses_spark(
    sim: dict[str, Any], benign_log: str, tmp_path: Path
) -> None:
    state = tmp_path / "a.state"
    args = ["audit", sim["log"], "--fpr", "0.01", "--state", str(state), "--calibrate", benign_log]
    first = runner.invoke(app, [*args, "--format", "json"])
    assert first.exit_code == 0, first.output
    flagged = json.loads(first.stdout)["flagged"]
    assert flagged and all(f["first_flagged"] > 0 for f in flagged)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "first flagged (UTC)" in again.stdout
    bad = runner.invoke(app, [*args, "--engine", "spark"])
    assert isinstance(bad.exception, InputError) and "--state" in str(bad.exception)
    watch = runner.invoke(app, ["audit", sim["log"], "--watch", "5"])
    assert isinstance(watch.exception, InputError)


def test_watching_measures_a_reference_log_once(
    sim: dict[str, Any], benign_log: str, tmp_path: Path
) -> None:
    """A known-benign reference does not change between watched runs: it is calibrated on
    once, and every later run reuses it; a log that calibrates itself does so every run."""
    import itertools

    from stillroom.audit.options import AuditOptions, audits

    base = {"source": sim["log"], "fpr": 0.01, "state": tmp_path / "w.state", "watch": 0.01}
    first, second = itertools.islice(audits(AuditOptions.parse(**base, calibrate=benign_log)), 2)
    assert second.calibration is first.calibration
    assert second.flagged_accounts() == first.flagged_accounts() != set()
    own = AuditOptions.parse(**{**base, "state": tmp_path / "own.state"})
    a, b = itertools.islice(audits(own), 2)
    assert b.calibration is not a.calibration
