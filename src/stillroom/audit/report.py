"""What the audit found, for people: evidence in plain words, a table, JSON and HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stillroom.audit.catalog import FEATURES
from stillroom.audit.result import AuditResult, FlaggedUnit
from stillroom.audit.score import Calibration
from stillroom.reportkit.files import write_atomic
from stillroom.reportkit.pages import render

LINK_WORDS = {
    "key": "share API keys",
    "address": "share client addresses",
    "block": "share a /24 address block",
    "system": "share a system prompt",
    "created": "were created within the same hours",
    "organization": "belong to one organization",
    "email": "share an email domain",
    "payment": "share a payment method",
    "agent": "share a rare user agent",
    "template": "share prompt templates",
    "timing": "work in the same time windows",
}


def evidence_lines(
    f: dict[str, Any], top: list[str], cal: Calibration, linked: dict[str, int] | None
) -> list[str]:
    """The strongest evidence for one flagged unit, in plain words. A feature is cited only
    with the highest benign percentile the unit stands above; one where it stands at or
    below the benign median is not evidence and is left out."""
    out = []
    if len(f["members"]) > 1:
        why = ", ".join(LINK_WORDS.get(k, k) for k in sorted(linked or {}))
        out.append(f"{len(f['members'])} accounts acting as one: they {why or 'are linked'}")
    for feat in top:
        v = float(f.get(feat) or 0.0)
        above = [
            (name, q)
            for name, q in zip(
                ("99th percentile", "90th percentile", "median"),
                reversed(cal.percentiles.get(feat, [])),
                strict=False,
            )
            if v > q
        ]
        if not above:
            continue
        name, q = above[0]
        shown = FEATURES[feat]
        out.append(f"{shown.say(v)} (benign {name} {shown.show(q)})")
    return out


def examples(members: list[str], samples: dict[str, list[str]], k: int = 3) -> list[str]:
    out: list[str] = []
    for a in members:
        for p in samples.get(a, []):
            if len(out) < k and p not in out:
                out.append(p if len(p) <= 200 else p[:197] + "...")
    return out


def as_json(r: AuditResult) -> dict[str, Any]:
    m = r.measured
    return {
        "fpr": r.fpr,
        "threshold": r.threshold,
        "units": len(m.units),
        "accounts": len(m.links.units),
        "input": m.stats.as_dict(),
        "timings": m.timings,
        "flagged": r.flagged,
        "flagged_accounts": sorted(r.flagged_accounts()),
        "warnings": r.warnings,
        "calibration": {
            "reference_units": len(r.calibration.ref_scores),
            "screened_out": r.calibration.screened_out,
            "gap": r.calibration.gap,
        },
    }


def table(r: AuditResult) -> str:
    """A plain-text table of the flagged units, strongest first."""
    since = any("first_flagged" in f for f in r.flagged)
    head = f"{'unit':<34} {'accts':>5} {'requests':>10} {'score':>7}"
    lines = [head + ("  first flagged (UTC)" if since else "") + "  strongest evidence"]
    for f in r.flagged:
        ev = f["evidence"][0] if f["evidence"] else ""
        first = f"  {_utc(f['first_flagged']):<19}" if since else ""
        lines.append(
            f"{f['unit'][:34]:<34} {len(f['accounts']):>5} "
            f"{int(f['features']['requests'] or 0):>10,} {f['score']:>7.2f}{first}  {ev}"
        )
    s = r.measured.stats
    lines.append(
        f"{len(r.flagged)} of {len(r.measured.units)} units flagged at FPR {r.fpr:g} "
        f"(threshold {r.threshold:.2f}); {s.used:,} of {s.rows:,} rows used, "
        f"{sum(s.garbage.values()):,} garbage"
        + (f" ({', '.join(f'{k}: {v:,}' for k, v in s.garbage.items())})" if s.garbage else "")
    )
    lines.extend(f"warning: {w}" for w in r.warnings)
    return "\n".join(lines) + "\n"


def _utc(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def write_html(r: AuditResult, path: Path) -> None:
    """A self-contained HTML report: one card per flagged unit."""
    s = r.measured.stats
    page = render(
        "audit.html.j2",
        flagged=len(r.flagged),
        units=len(r.measured.units),
        fpr=f"{r.fpr:g}",
        threshold=f"{r.threshold:.2f}",
        used=f"{s.used:,}",
        rows=f"{s.rows:,}",
        garbage=f"{sum(s.garbage.values()):,}",
        garbage_kinds=str(s.garbage) if s.garbage else "",
        cards=[_card(f) for f in r.flagged],
    )
    write_atomic(path, page + "\n")


def _card(f: FlaggedUnit) -> dict[str, Any]:
    shown = 20  # accounts named on a card; a large actor's full list is in the JSON
    extra = len(f["accounts"]) - shown
    return {
        "unit": f["unit"],
        "score": f"{f['score']:.2f}",
        "accounts": f["accounts"][:shown],
        "more": f" and {extra} more" if extra > 0 else "",
        "evidence": f["evidence"],
        "examples": f["examples"],
    }
