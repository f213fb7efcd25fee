"""The audit end to end: ingest, link, features, score, flags with evidence."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.audit import accounts_meta, ingest, links, text
from stillroom.audit import features as F
from stillroom.audit.engine import SQLEngine, make_engine
from stillroom.audit.report import evidence_lines, examples
from stillroom.audit.result import AuditResult, FlaggedUnit, Measured
from stillroom.audit.score import Calibration, fit, score, self_calibrate
from stillroom.audit.state import AuditState
from stillroom.errors import InputError


class _Clock:
    """Wall and CPU seconds (every thread of this process, DuckDB's included) per stage: the
    CPU figure says what a stage costs even when other work shares the machine."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self, stage: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.into[f"{stage}_s"] = wall - self.wall
        self.into[f"{stage}_cpu_s"] = cpu - self.cpu
        self.wall, self.cpu = wall, cpu


def measure(
    source: str,
    *,
    engine: str | SQLEngine = "duckdb",
    mapping: dict[str, str] | None = None,
    schema: str = "auto",
    since: float | None = None,
    until: float | None = None,
    sample: int = 24,
    embedder: text.Embedder | None = None,
    link: bool = True,
    log: Callable[[str], None] | None = None,
    state: AuditState | None = None,
    accounts_table: str | None = None,
) -> Measured:
    """Features of every unit (account, or linked actor) in the log at `source`; with
    `state`, only the rows since its newest are read, and the units are those of every row
    stored."""
    say = log or (lambda m: None)
    eng = make_engine(engine) if isinstance(engine, str) else engine
    work = Path(tempfile.mkdtemp(prefix="stillroom-audit-"))
    t: dict[str, float] = {}
    try:
        clock = _Clock(t)
        src = ingest.resolve(source, work)
        mark = state.watermark() if state is not None else None  # rows before it: read
        stats = ingest.load(eng, src, mapping or {}, work, since, until, schema,
                            allow_empty=state is not None, read_from=mark)  # fmt: skip
        clock.lap("ingest")
        say(f"read {stats.rows:,} rows, {stats.used:,} usable")
        sampled = F.sample_texts(eng, sample)
        if state is not None:
            sampled = state.absorb(sampled, sample)
            if not sampled:
                raise InputError(f"{source}: no usable rows yet; nothing to audit")
        samples, systems = text.by_account(sampled), text.system_prompts(sampled)
        tfeat, vecs = text.account_text_features(samples, embedder or text.Embedder())
        clock.lap("text")
        volume = {
            str(r["account_id"]): int(r["n"])
            for r in eng.rows("SELECT account_id, count(*) AS n FROM log GROUP BY account_id")
        }
        span = eng.rows("SELECT min(ts) AS lo, max(ts) AS hi FROM log")[0]
        window = (float(span["lo"]), float(span["hi"]))
        if link:
            lk = _link(eng, sorted(volume), systems, window, accounts_table or None, source)
        else:
            lk = links.Links({a: a for a in sorted(volume)})
        clock.lap("links")
        units = F.unit_features(eng, lk.units)
        members = lk.members()
        for unit, f in units.items():
            f["members"] = members.get(unit, [unit])
            _text_of_unit(f, tfeat, vecs, samples, sample)
        clock.lap("features")
        return Measured(units, lk, samples, stats, volume, t, window)
    finally:
        if isinstance(engine, str):
            eng.close()
        shutil.rmtree(work, ignore_errors=True)


def _link(
    eng: SQLEngine,
    accounts: list[str],
    systems: dict[str, set[str]],
    window: tuple[float, float],
    accounts_table: str | None,
    source: str,
) -> links.Links:
    """Accounts joined into actors by shared values, timing, system prompts and metadata."""
    hours = max(1.0, (window[1] - window[0]) / 3600.0)
    shared = F.shared_values(eng, max(links.MAX_SHARE.values()))
    activity = F.activity(eng, links.SYNC_BUCKET_S)
    meta = accounts_meta.evidence(accounts_meta.load(accounts_table, source))
    return links.link(accounts, shared, systems, activity, hours, meta)


def _text_of_unit(
    f: dict[str, Any],
    tfeat: dict[str, dict[str, Any]],
    vecs: dict[str, np.ndarray],
    samples: dict[str, list[str]],
    k: int,
) -> None:
    """Template reuse and breadth of a unit: its members' samples together."""
    members = f["members"]
    if len(members) == 1:
        a = members[0]
        f["template_reuse"] = tfeat.get(a, {}).get("template_reuse", 0.0)
        f["topic_breadth"] = text.dispersion(vecs.get(a, np.zeros((0, 384))))
        f["lexical_breadth"] = text.lexical_breadth(samples.get(a, []))
        return
    per = max(2, (4 * k) // len(members))
    prompts = [p for a in members for p in samples.get(a, [])[:per]]
    v = [vecs[a][:per] for a in members if a in vecs]
    f["template_reuse"] = text.template_features(prompts)[0]
    f["topic_breadth"] = text.dispersion(np.concatenate(v)) if v else 0.0
    f["lexical_breadth"] = text.lexical_breadth(prompts)


def audit(  # long: the steps of one run in order: measure, calibrate, score, record
    source: str,
    *,
    engine: str = "duckdb",
    fpr: float = 0.001,
    calibration: Calibration | None = None,
    calibrate: str | None = None,
    mapping: dict[str, str] | None = None,
    schema: str = "auto",
    since: float | None = None,
    until: float | None = None,
    sample: int = 24,
    embedder: str = "static",
    link: bool = True,
    min_requests: int = 1,
    log: Callable[[str], None] | None = None,
    state: Path | None = None,
    accounts_table: str | None = None,
    record: bool = False,
) -> AuditResult:
    """Flag the units whose score passes the benign threshold for `fpr`; units with fewer
    than `min_requests` requests in the window are scored but not flagged. With `state` (a
    file), read only what is new since the last run on it, and give each flagged unit the
    time it was first flagged (`first_flagged`, in log time). With `record`, and `source` a
    stillroom gateway's database, the run is stored there for the console (runs_store.py),
    and the accounts reviewers dismissed as benign there stay in the benign reference."""
    say = log or _stderr
    emb = text.Embedder(embedder)
    eng = make_engine(engine)
    st = AuditState(state, eng) if state is not None else None
    try:
        m = measure(
            source,
            engine=eng,
            mapping=mapping,
            schema=schema,
            since=since,
            until=until,
            sample=sample,
            embedder=emb,
            link=link,
            log=say,
            state=st,
            accounts_table=accounts_table,
        )
        if calibration is None and calibrate is not None:
            ref = measure(
                calibrate,
                engine=eng,
                mapping=mapping,
                schema=schema,
                sample=sample,
                embedder=emb,
                link=link,
                log=say,
            )
            calibration = fit(list(ref.units.values()))  # known benign: all of it is reference
        clock = _Clock(m.timings)
        cal = calibration or self_calibrate(list(m.units.values()))
        store = _gateway_store(source) if record else None
        cal, benign = _known_benign(store, cal, m, say)
        result = decide(m, cal, fpr, min_requests)
        clock.lap("score")
        if store is not None:
            _record(store, result, source, benign, say)
        if st is not None:
            first = st.record(result.flagged, as_of=m.window[1])
            for f in result.flagged:
                f["first_flagged"] = min(first[a] for a in f["accounts"])
    finally:
        if st is not None:
            st.close()
        eng.close()
    return result


def _gateway_store(source: str) -> Any:
    """An engine on `source` when it is a stillroom gateway's database, else None (a log
    file, or another gateway's database: nothing to keep the run in)."""
    if not ingest.is_gateway_db(source):
        return None
    from stillroom.audit.runs_store import is_stillroom_gateway
    from stillroom.serve.db import open_db

    engine = open_db(source, migrate=False)
    if is_stillroom_gateway(engine):
        return engine
    engine.dispose()
    return None


def _record(store: Any, result: AuditResult, source: str, benign: int, say: Any) -> None:
    """Keep the run for the console. A database the audit may read but not write (a read
    replica) costs the console its cases, not the audit its result."""
    import sqlalchemy as sa

    from stillroom.audit.runs_store import record_run

    try:
        run_id = record_run(store, result, source, benign)
        say(f"stored as audit run {run_id}: {len(result.flagged)} case(s) for the console")
    except sa.exc.SQLAlchemyError as e:
        say(f"warning: the run was not stored for the console: {str(e).splitlines()[0]}")
    finally:
        store.dispose()


def _known_benign(
    store: Any, cal: Calibration, m: Measured, say: Callable[[str], None]
) -> tuple[Calibration, int]:
    if store is None:
        return cal, 0
    from stillroom.audit.runs_store import known_benign_accounts, with_known_benign

    cal, n = with_known_benign(cal, m.units, known_benign_accounts(store))
    if n:
        say(f"calibration: {n} unit(s) dismissed as benign in the console count as known benign")
    return cal, n


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")


TIE_TOLERANCE = 1e-9  # relative: far above float noise, far below any real score gap


def decide(m: Measured, cal: Calibration, fpr: float, min_requests: int = 1) -> AuditResult:
    """Scores, the threshold for `fpr`, and the flagged units with their evidence.

    A unit with fewer than `min_requests` requests is not flagged: a handful of requests
    cannot harvest much, and its per-request features are too noisy to judge (a user whose
    two replies both hit max_tokens looks extreme on a ratio)."""
    names = list(m.units)
    scores, contrib = score(cal, [m.units[u] for u in names])
    thr = cal.threshold(fpr)
    # Above the threshold by more than float noise: DuckDB's parallel sums differ in the last
    # bits from run to run, and a unit scoring exactly the threshold (a reference account
    # that is also in the log) must not be flagged on one run and not on the next.
    above = thr + TIE_TOLERANCE * max(1.0, abs(thr))
    flagged: list[FlaggedUnit] = []
    for i in np.argsort(-scores).tolist():
        if scores[i] <= above:
            break
        unit = names[i]
        f = m.units[unit]
        if f["requests"] < min_requests:
            continue
        top = [cal.features[j] for j in np.argsort(-contrib[i]).tolist()[:4] if contrib[i, j] > 0]
        flagged.append(
            {
                "unit": unit,
                "accounts": f["members"],
                "score": float(scores[i]),
                "evidence": evidence_lines(f, top, cal, m.links.evidence.get(unit)),
                "examples": examples(f["members"], m.samples),
                "features": {
                    k: f.get(k)
                    for k in (
                        *cal.features,
                        "requests",
                        "mean_temperature",
                        "frac_temperature_zero",
                        "accounts",
                    )
                },
            }
        )
    return AuditResult(
        m,
        cal,
        thr,
        fpr,
        dict(zip(names, scores.tolist(), strict=True)),
        flagged,
        cal.warnings(fpr),
    )
