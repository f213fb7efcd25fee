"""Labeled API traffic in the gateway's request-log schema, for tests and benchmarks.

Who is in a simulated log (`population`): benign personas (personas.py: chat users,
developers, enterprise batch pipelines, benchmark evaluators), ordinary production workloads
(workloads.py: support bots, translation, labeling, evaluation harnesses, research sampling,
RAG, agents, moderation, summarisation, IDE completion) and distiller actors (distillers.py),
some spread over many accounts. Nothing in a row names its persona: every kind draws from the
same vocabularies, models, user agents and parameter ranges (traffic.py). Labels go to a
separate file. Simulated replies are abbreviated to their first words (`completion_tokens`
carries the real length), which keeps 10M rows on disk small.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.audit import distillers, personas, workloads
from stillroom.audit.traffic import (
    BROWSER_AGENTS,
    DAY,
    ENTERPRISE_TEMPLATES,
    ERRORS,
    MODELS,
    SDK_AGENTS,
    START,
    Behaviour,
    Persona,
    Req,
    hex_id,
    random_ip,
)
from stillroom.serve.db import requests as requests_table

# The gateway's own log schema, so simulated logs are exactly what `serve` writes.
COLUMNS = tuple(c.name for c in requests_table.columns)


class _Sink:
    """Columns of rows, flushed to one Parquet file in row groups."""

    def __init__(self, path: Path, seed: int, rows_per_group: int = 100_000) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema(
            [
                ("id", pa.string()),
                ("created_at", pa.float64()),
                ("account_id", pa.string()),
                ("key_id", pa.string()),
                ("endpoint", pa.string()),
                ("model", pa.string()),
                ("messages", pa.string()),
                ("prompt", pa.string()),
                ("params", pa.string()),
                ("response_text", pa.string()),
                ("prompt_tokens", pa.int64()),
                ("completion_tokens", pa.int64()),
                ("status", pa.int64()),
                ("error", pa.string()),
                ("latency_ms", pa.float64()),
                ("backend_ms", pa.float64()),
                ("client_addr", pa.string()),
                ("user_agent", pa.string()),
                ("watermark_key_id", pa.string()),
                ("delivery", pa.string()),
            ]
        )
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        self.rows_per_group = rows_per_group
        self.n = 0
        self.prefix = f"req_{seed % 65536:04x}"

    def add(self, p: Persona, times: np.ndarray, reqs: list[Req]) -> None:
        c = self.cols
        r = p.rng
        hist_cache: dict[int, list[dict[str, str]]] = {}
        for t, q in zip(times.tolist(), reqs, strict=True):
            self.n += 1
            n = int(q.params.get("n", 1))
            ok = q.status == 200
            ct = q.completion_tokens * n if ok else 0
            pt = (
                int(len(q.text) / 4) + 8 + q.history * 120 + (len(q.system) // 4 if q.system else 0)
            )
            c["id"].append(f"{self.prefix}{self.n:020x}")
            c["created_at"].append(t)
            c["account_id"].append(p.account_id)
            c["key_id"].append(p.keys[0] if len(p.keys) == 1 else r.choice(p.keys))
            c["endpoint"].append(q.endpoint)
            c["model"].append(p.extra.get("model") or r.choice(MODELS))
            if q.endpoint == "chat.completions":
                if q.history not in hist_cache:
                    hist_cache[q.history] = [
                        m
                        for k in range(q.history)
                        for m in (
                            {"role": "user", "content": f"earlier question {k}"},
                            {"role": "assistant", "content": "earlier answer"},
                        )
                    ]
                msgs = ([{"role": "system", "content": q.system}] if q.system else []) + [
                    *hist_cache[q.history],
                    {"role": "user", "content": q.text},
                ]
                c["messages"].append(json.dumps(msgs, ensure_ascii=False, separators=(",", ":")))
                c["prompt"].append(None)
            else:
                c["messages"].append(None)
                c["prompt"].append(q.text)
            c["params"].append(json.dumps(q.params, separators=(",", ":")))
            c["response_text"].append(
                json.dumps(["Here is a response about " + q.text[:24]] * n) if ok else None
            )
            c["prompt_tokens"].append(pt)
            c["completion_tokens"].append(ct)
            c["status"].append(q.status)
            c["error"].append(None if ok else ERRORS.get(q.status, "upstream error"))
            backend = (40.0 + ct * 12.0 * r.uniform(0.8, 1.3)) if ok else 0.0
            c["latency_ms"].append(backend + r.uniform(1.0, 6.0))
            c["backend_ms"].append(backend if ok else None)
            c["client_addr"].append(p.addrs[0] if len(p.addrs) == 1 else r.choice(p.addrs))
            c["user_agent"].append(p.agents[0] if len(p.agents) == 1 else r.choice(p.agents))
            c["watermark_key_id"].append("wm_main" if ok else None)
            c["delivery"].append("delivered" if ok else None)
        if len(c["id"]) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if not self.cols["id"]:
            return
        table = self.pa.table(self.cols, schema=self.schema)
        self.writer.write_table(table)
        self.cols = {c: [] for c in COLUMNS}

    def close(self) -> None:
        self.flush()
        self.writer.close()


# Shares of benign accounts: the four personas, then the production workloads.
BENIGN_MIX = {
    **{k: v * (1 - sum(workloads.WORKLOAD_MIX.values())) for k, v in personas.PERSONA_MIX.items()},
    **workloads.WORKLOAD_MIX,
}
STRATEGIES = (
    "bulk_harvest",
    "low_and_slow",
    "cot_extraction",
    "mixed_harvest",
    "logit_mining",
    "paraphrase",
    "hydra",
    "hydra_thin",
)
BEHAVIOURS: dict[str, Behaviour] = {
    "chat_user": personas.chat_user,
    "developer": personas.developer,
    "enterprise_batch": personas.enterprise_batch,
    "evaluator": personas.evaluator,
    **workloads.WORKLOADS,
    "bulk_harvest": distillers.bulk_harvest,
    "low_and_slow": distillers.low_and_slow,
    "cot_extraction": distillers.cot_extraction,
    "mixed_harvest": distillers.mixed_harvest,
    "logit_mining": distillers.logit_mining,
    "paraphrase": distillers.paraphrase,
    "hydra": distillers.hydra_member,
    "hydra_thin": distillers.hydra_thin,
}
ORG_NAMES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay")


# --- population ----------------------------------------------------------------------------


class _Cast:
    """Makes the accounts of one population, all from one seeded random stream."""

    def __init__(self, r: random.Random) -> None:
        self.r = r
        self.people: list[Persona] = []

    def make(self, kind: str, label: str, actor: str | None = None, **extra: Any) -> Persona:
        r = self.r
        acct = "acct_" + hex_id(r)
        keys = ["key_" + hex_id(r) for _ in range(r.choice((1, 1, 1, 2, 3)))]
        rng = random.Random(r.getrandbits(64))
        agents = [r.choice(SDK_AGENTS + BROWSER_AGENTS)]
        p = Persona(acct, actor or acct, label, kind, keys, [random_ip(r)], agents, rng, extra)
        self.people.append(p)
        return p


def _shifts(
    r: random.Random, days: float, k: tuple[int, int], hours: tuple[float, float]
) -> list[tuple[float, float]]:
    out = []
    for _ in range(r.randint(*k)):
        a = START + r.uniform(0, days * DAY - 10 * 3600)
        out.append((a, a + r.uniform(*hours) * 3600))
    return out


def _distillers(cast: _Cast, accounts: int, days: float) -> None:
    """Single-account strategies, hydras (8-20 accounts of a few hundred to a few thousand
    requests) and thin hydras (20-30 accounts of 30-160 requests from a few addresses of one
    /24 block, one system prompt, disjoint slices of one curriculum, shared windows)."""
    r = cast.r
    per = max(1, round(accounts / 160))
    for kind in STRATEGIES[:6]:
        for _ in range(per):
            p = cast.make(kind, "distiller")
            p.agents = [r.choice(SDK_AGENTS)]
    for _ in range(max(1, round(accounts / 330))):
        actor = "actor_" + hex_id(r, 8)
        style = distillers.harvest_style(r)
        style["n"] = 1
        agent = r.choice((*SDK_AGENTS, f"harvest-client/{r.randint(1, 9)}.{r.randint(0, 9)}"))
        pool = [random_ip(r) for _ in range(r.randint(2, 4))] if r.random() < 0.6 else None
        shifts = _shifts(r, days, (3, 7), (3, 10))
        for _ in range(r.randint(8, 20)):
            p = cast.make("hydra", "distiller", actor, style=style, shifts=shifts)
            p.agents = [agent]
            p.addrs = [r.choice(pool)] if pool else [random_ip(r)]
    for _ in range(max(1, round(accounts / 330))):
        _thin_hydra(cast, days)


def _thin_hydra(cast: _Cast, days: float) -> None:
    r = cast.r
    actor = "actor_" + hex_id(r, 8)
    style = distillers.harvest_style(r)
    style["system"] = (
        f"You are {r.choice(('Atlas', 'Sage', 'Orion', 'Nova', 'Quill'))}-{r.randint(10, 99)}, "
        f"a meticulous expert. {r.choice(('Answer completely.', 'Be exhaustive.'))}"
    )
    block = random_ip(r).rsplit(".", 1)[0]
    addrs = [f"{block}.{r.randint(1, 254)}" for _ in range(r.randint(2, 4))]
    agent = r.choice(SDK_AGENTS)
    shifts = _shifts(r, days, (4, 8), (2, 6))
    members = r.randint(20, 30)
    sizes = [r.randint(30, 160) for _ in range(members)]
    pool = distillers.curriculum(r, sum(sizes), style)
    start = 0
    for size in sizes:
        p = cast.make(
            "hydra_thin",
            "distiller",
            actor,
            style=style,
            shifts=shifts,
            pool=pool[start : start + size],
        )
        start += size
        p.agents = [agent]
        p.addrs = r.sample(addrs, r.randint(1, 2))


def _benign(cast: _Cast, n_benign: int, seed: int) -> None:
    """Benign accounts by BENIGN_MIX; organisations hold several accounts behind one NAT."""
    r = cast.r
    kinds = list(BENIGN_MIX)
    counts = np.random.default_rng(seed).multinomial(n_benign, list(BENIGN_MIX.values()))
    for kind, count in zip(kinds, counts.tolist(), strict=True):
        sizes = workloads.ORG_SIZES.get(kind, (1, 1, 1, 2, 3) if kind in ORG_KINDS else (1,))
        k = 0
        while k < count:
            org = f"{r.choice(ORG_NAMES)} {r.randint(1, 999)}"
            size = min(count - k, r.choice(sizes))
            nat = random_ip(r)
            template = r.randrange(len(ENTERPRISE_TEMPLATES))
            for _ in range(size):
                p = cast.make(kind, "benign", org=org, template=template)
                if kind in workloads.WORKLOADS:  # a service calls the API, not a browser
                    p.agents = [r.choice(SDK_AGENTS)]
                if size > 1 or kind in ORG_KINDS:
                    p.addrs = [nat]
                elif kind == "chat_user":
                    p.addrs = [random_ip(r) for _ in range(r.randint(1, 3))]
            k += size


ORG_KINDS = ("developer", "enterprise_batch")


def population(accounts: int, seed: int, days: float = 7.0) -> list[Persona]:
    """Who is in the simulated log: benign accounts and distiller actors, shuffled."""
    cast = _Cast(random.Random(seed))
    _distillers(cast, accounts, days)
    _benign(cast, max(0, accounts - len(cast.people)), seed)
    cast.r.shuffle(cast.people)
    return cast.people


EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com")


def account_metadata(people: list[Persona], seed: int) -> list[dict[str, Any]]:
    """What a provider knows of each account at sign-up (created_at, organization, email
    domain, a hash of the payment method), from a random stream of its own (the traffic of a
    seed does not change with it). An organisation's accounts share its name, domain and
    card, created over months; a hydra's accounts are made in one sitting, some on a
    throwaway domain, paid with a few cards between them; everyone else signs up alone."""
    r = random.Random(f"accounts:{seed}")
    orgs: dict[str, dict[str, Any]] = {}
    actors: dict[str, dict[str, Any]] = {}
    rows = []
    for p in people:
        created = START - r.uniform(1, 400) * DAY
        org, domain, card = None, r.choice(EMAIL_DOMAINS), hex_id(r, 12)
        if p.label == "benign" and "org" in p.extra and p.kind not in ("chat_user",):
            o = orgs.setdefault(
                p.extra["org"],
                {"created": created, "card": card, "domain": f"org{hex_id(r, 6)}.com"},
            )
            org, domain, card = p.extra["org"], o["domain"], o["card"]
            created = o["created"] + r.uniform(0, 120) * DAY
        elif p.actor_id != p.account_id:  # one actor, many accounts
            a = actors.setdefault(
                p.actor_id,
                {
                    "created": START - r.uniform(2, 30) * DAY,
                    "cards": [hex_id(r, 12) for _ in range(r.randint(1, 4))],
                    "domain": f"mail{hex_id(r, 4)}.net" if r.random() < 0.5 else None,
                },
            )
            created = a["created"] + r.uniform(0, 4) * 3600.0
            card = r.choice(a["cards"]) if r.random() < 0.6 else card
            domain = a["domain"] or domain
        rows.append(
            {
                "account_id": p.account_id,
                "created_at": min(created, START - 3600.0),
                "organization": org,
                "email_domain": domain,
                "payment_fingerprint": card,
            }
        )
    return rows


def simulate(
    out: Path,
    *,
    accounts: int = 1000,
    seed: int = 0,
    days: float = 7.0,
    volume: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write DIR/requests.parquet (the log), DIR/labels.parquet and DIR/manifest.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    people = population(accounts, seed, days)
    tmp = out / "requests.parquet.tmp"
    sink = _Sink(tmp, seed)
    g = np.random.default_rng(seed + 7)
    per_kind: dict[str, int] = {}
    for k, p in enumerate(people):
        p.extra["volume"] = volume
        times, reqs = BEHAVIOURS[p.kind](p, g, days)
        sink.add(p, times, reqs)
        per_kind[p.kind] = per_kind.get(p.kind, 0) + len(reqs)
        if progress:
            progress(k + 1, len(people))
    sink.close()
    tmp.replace(out / "requests.parquet")
    labels = pa.table(
        {
            "account_id": [p.account_id for p in people],
            "actor_id": [p.actor_id for p in people],
            "label": [p.label for p in people],
            "kind": [p.kind for p in people],
        }
    )
    pq.write_table(labels, out / "labels.parquet")
    pq.write_table(pa.Table.from_pylist(account_metadata(people, seed)), out / "accounts.parquet")
    manifest = {
        "seed": seed,
        "accounts": len(people),
        "requests": sink.n,
        "days": days,
        "requests_by_kind": per_kind,
        "accounts_by_kind": {k: sum(p.kind == k for p in people) for k in BEHAVIOURS},
        "log": str(out / "requests.parquet"),
        "labels": str(out / "labels.parquet"),
        "accounts_table": str(out / "accounts.parquet"),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_benign_log(manifest: dict[str, Any], out: Path) -> Path:
    """The simulated log's benign accounts alone, as Parquet: a known-benign log to calibrate
    an audit on (`stillroom audit --calibrate`), as a provider's vetted customers would be."""
    import duckdb

    keep = [
        r["account_id"] for r in iter_labels(Path(manifest["labels"])) if r["label"] == "benign"
    ]
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE keep AS SELECT unnest(?) AS account_id", [keep])
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{manifest['log']}') WHERE account_id IN "
            f"(SELECT account_id FROM keep)) TO '{out}' (FORMAT parquet)"
        )
    finally:
        con.close()
    return out


def iter_labels(path: Path) -> Iterator[dict[str, str]]:
    import pyarrow.parquet as pq

    yield from pq.read_table(path).to_pylist()
