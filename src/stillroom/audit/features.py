"""Per-unit features in SQL that DuckDB and Spark SQL both run unchanged.

A unit is an account, or an actor: accounts that links.py joined, whose traffic is then
measured as one. `units(account_id, unit)` maps accounts to actors; unmapped accounts are
their own unit. Text features (template reuse, topic breadth) come from text.py on a sample.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from stillroom.audit.engine import SQLEngine

DEFAULT_MAX_TOKENS = 256.0  # what the gateway uses when a request gives none

# Each unit's features come from a few queries over the same `ev` (the log with each row's
# unit), run one at a time and joined by unit here: one query with every part in it made
# DuckDB hold all their hash tables and sorts at once, three times the CPU at 10M rows.
EV = """
WITH ev AS (
  SELECT l.*, COALESCE(u.unit, l.account_id) AS unit
  FROM log l LEFT JOIN units u ON l.account_id = u.account_id
)
"""

FEATURE_QUERIES = {
    "base": """
SELECT unit,
  count(*) AS requests,
  count(DISTINCT account_id) AS accounts,
  sum(CASE WHEN status = 429 THEN 1e0 ELSE 0e0 END) / count(*) AS frac_rate_limited,
  sum(CAST(prompt_tokens AS DOUBLE)) AS prompt_tokens,
  sum(CAST(completion_tokens AS DOUBLE)) AS completion_tokens,
  sum(CAST(completion_tokens AS DOUBLE) / n) AS choice_tokens,
  avg(CAST(logprobs AS DOUBLE)) AS frac_logprobs,
  avg(CASE WHEN logprobs = 1 THEN top_logprobs END) AS mean_top_logprobs,
  avg(CASE WHEN logprobs = 1
      THEN greatest(top_logprobs, 1e0) * CAST(completion_tokens AS DOUBLE) / n ELSE 0e0 END)
    AS logprob_values,
  avg(CASE WHEN n > 1 THEN 1e0 ELSE 0e0 END) AS frac_n_gt1,
  avg(n) AS mean_n,
  avg(COALESCE(temperature, 1e0)) AS mean_temperature,
  avg(CASE WHEN temperature = 0 THEN 1e0 ELSE 0e0 END) AS frac_temperature_zero,
  avg(CASE WHEN temperature IS NULL THEN 1e0 ELSE 0e0 END) AS frac_temperature_default,
  avg(ln(COALESCE(max_tokens, {default_max}))) AS mean_log_max_tokens,
  avg(CASE WHEN turns <= 1 THEN 1e0 ELSE 0e0 END) AS frac_single_turn,
  avg(CAST(cot AS DOUBLE)) AS frac_cot,
  count(DISTINCT key_id) AS keys,
  count(DISTINCT client_addr) AS addresses,
  count(DISTINCT user_agent) AS user_agents,
  min(ts) AS first_ts,
  max(ts) AS last_ts
FROM ev GROUP BY unit""",
    "gaps": """
SELECT unit,
  avg(CASE WHEN gap < 3600 THEN gap END) AS gap_mean,
  stddev_samp(CASE WHEN gap < 3600 THEN gap END) AS gap_std
FROM (SELECT unit, ts - lag(ts) OVER (PARTITION BY unit ORDER BY ts) AS gap FROM ev) g
GROUP BY unit""",
    "prompts": """
SELECT unit,
  CAST(count(*) AS DOUBLE) / sum(c) AS prompt_uniqueness,
  sum(CASE WHEN senders = 1 THEN CAST(c AS DOUBLE) ELSE 0e0 END) / sum(c) AS prompt_exclusivity,
  sum(CASE WHEN senders = 1 THEN answer ELSE 0e0 END) AS novel_tokens,
  sum(CASE WHEN senders = 1 THEN asked ELSE 0e0 END) AS novel_prompt_tokens,
  sum(CASE WHEN senders = 1 THEN 1e0 ELSE 0e0 END) AS novel_prompts
FROM (
  SELECT unit, c, answer, asked, count(*) OVER (PARTITION BY phash) AS senders
  FROM (SELECT unit, phash, count(*) AS c, avg(CAST(completion_tokens AS DOUBLE) / n) AS answer,
          avg(CAST(prompt_tokens AS DOUBLE)) AS asked
        FROM ev GROUP BY unit, phash) up
) t
GROUP BY unit""",
    "hours": """
, hours AS (
  SELECT unit, CAST(floor(ts / 3600) AS BIGINT) AS hb, count(*) AS c
  FROM ev GROUP BY unit, CAST(floor(ts / 3600) AS BIGINT)
),
hod AS (
  SELECT unit, hb % 24 AS h, CAST(sum(c) AS DOUBLE) AS c FROM hours GROUP BY unit, hb % 24
),
hod_entropy AS (
  SELECT unit, -sum((c / tot) * ln(c / tot)) / ln(24e0) AS hour_entropy
  FROM (SELECT unit, c, sum(c) OVER (PARTITION BY unit) AS tot FROM hod) t GROUP BY unit
),
active AS (
  SELECT unit, count(*) AS active_hours FROM hours GROUP BY unit
)
SELECT e.unit, e.hour_entropy, a.active_hours
FROM hod_entropy e JOIN active a ON e.unit = a.unit""",
}
PART_COLUMNS = {
    "gaps": ("gap_mean", "gap_std"),
    "prompts": (
        "prompt_uniqueness",
        "prompt_exclusivity",
        "novel_tokens",
        "novel_prompt_tokens",
        "novel_prompts",
    ),
    "hours": ("hour_entropy", "active_hours"),
}


def unit_features(engine: SQLEngine, units: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{unit: features} for every unit in `log`; `units` maps account -> actor (others: self)."""
    accounts = sorted(units)
    engine.register("units", {"account_id": accounts, "unit": [units[a] for a in accounts]})
    rows = engine.rows(
        EV + FEATURE_QUERIES["base"].format(default_max=f"{DEFAULT_MAX_TOKENS:.0f}e0")
    )
    for part, cols in PART_COLUMNS.items():
        got = {str(r["unit"]): r for r in engine.rows(EV + FEATURE_QUERIES[part])}
        for r in rows:
            g = got.get(str(r["unit"]), {})
            r.update({c: g.get(c) for c in cols})
    span = engine.rows("SELECT min(ts) AS lo, max(ts) AS hi FROM log")[0]
    window_hours = max(1.0, math.ceil((float(span["hi"]) - float(span["lo"])) / 3600.0))
    return {str(r["unit"]): derive(r, window_hours) for r in rows}


def derive(r: dict[str, Any], window_hours: float) -> dict[str, Any]:
    """The scored features from one unit's query rows (pure; the same for every engine)."""
    f = {k: (float(v) if isinstance(v, int | float | Decimal) else v) for k, v in r.items()}
    pt, ct = f["prompt_tokens"] or 0.0, f["completion_tokens"] or 0.0
    n = f["mean_n"] or 1.0
    gap_mean, gap_std = f.get("gap_mean"), f.get("gap_std")
    novel = max(1.0, float(f.get("novel_prompts") or 0.0))
    cv = gap_std / gap_mean if gap_mean and gap_std is not None and gap_mean > 0 else 1.0
    f.update(
        log_requests=math.log10(f["requests"]),
        log_completion_tokens=math.log10(1.0 + ct),
        # distinct answers are what a harvest keeps; n samples of one prompt count once
        log_choice_tokens=math.log10(1.0 + (f.get("choice_tokens") or 0.0)),
        # one answer per distinct prompt that no other account sends: the text a harvest
        # takes away and nobody else has (repeats, n > 1 and public benchmark items add none)
        log_novel_tokens=math.log10(1.0 + (f.get("novel_tokens") or 0.0)),
        # answer length, and answer per prompt token, on those prompts only: long answers to
        # public benchmark items (an evaluation harness) are not what a harvest keeps
        log_novel_answer=math.log10(1.0 + (f.get("novel_tokens") or 0.0) / novel),
        log_novel_ratio=math.log10(
            (1.0 + (f.get("novel_tokens") or 0.0) / novel)
            / (1.0 + (f.get("novel_prompt_tokens") or 0.0) / novel)
        )
        if f.get("novel_prompts")
        else 0.0,
        # per returned choice: n > 1 is its own feature, not counted twice
        log_output_input_ratio=math.log10((1.0 + ct / n) / (1.0 + pt)),
        log_mean_completion=math.log10(1.0 + ct / (f["requests"] * n)),
        top_logprobs=f["mean_top_logprobs"] or 0.0,
        log_logprob_values=math.log10(1.0 + (f["logprob_values"] or 0.0)),
        active_hours_frac=(f["active_hours"] or 0.0) / window_hours,
        regularity=1.0 / (1.0 + cv),  # 1: clockwork, 0.5: Poisson, lower: bursty
        hour_entropy=f["hour_entropy"] or 0.0,
        gap_cv=cv,
    )
    return f


def activity(engine: SQLEngine, bucket_s: float) -> list[dict[str, Any]]:
    """(account, time bucket) pairs with activity, for synchronised-timing links."""
    return engine.rows(
        f"SELECT DISTINCT account_id, CAST(floor(ts / {bucket_s!r}) AS BIGINT) AS bucket FROM log"
    )


# The /24 block of an IPv4 address ('' for anything else); no backslashes, for Spark's parser.
BLOCK = "regexp_extract(client_addr, '^([0-9]+[.][0-9]+[.][0-9]+)[.][0-9]+$', 1)"


def shared_values(engine: SQLEngine, max_accounts: int) -> list[dict[str, Any]]:
    """(kind, value, account) for keys, addresses, /24 blocks and user agents that 2..max
    accounts share."""
    parts = " UNION ALL ".join(
        f"SELECT DISTINCT '{kind}' AS kind, {col} AS value, account_id FROM log "
        f"WHERE {col} IS NOT NULL AND {col} <> ''"
        for kind, col in (
            ("key", "key_id"),
            ("address", "client_addr"),
            ("block", BLOCK),
            ("agent", "user_agent"),
        )
    )
    return engine.rows(
        f"SELECT kind, value, account_id FROM (SELECT kind, value, account_id, "
        f"count(*) OVER (PARTITION BY kind, value) AS k FROM ({parts}) s) t "
        f"WHERE k BETWEEN 2 AND {int(max_accounts)} ORDER BY kind, value, account_id"
    )


def sample_texts(engine: SQLEngine, per_account: int) -> list[dict[str, Any]]:
    """Up to `per_account` prompts per account, the same on every engine (md5 order; rows
    with equal text may tie, and either gives the same prompt)."""
    d = engine.dialect
    text = "COALESCE(t.messages, t.prompt)"
    rid = f"COALESCE(t.id, concat(md5({text}), CAST(t.created_at AS {d.string})))"
    # the sample is materialised first: with its size known, the join builds its hash table
    # on these few rows and streams the log's texts past it (not the other way round)
    engine.materialize(
        "sample_rows",
        f"""
SELECT account_id, rid, phash FROM (
  SELECT account_id, rid, phash,
    row_number() OVER (PARTITION BY account_id ORDER BY phash) AS rn
  FROM log) x
WHERE rn <= {int(per_account)}""",
    )
    return engine.rows(
        f"""
SELECT s.account_id, s.rid, s.phash, t.endpoint, {text} AS text
FROM sample_rows s JOIN src_typed t ON {rid} = s.rid
ORDER BY s.account_id, s.phash, s.rid"""
    )
