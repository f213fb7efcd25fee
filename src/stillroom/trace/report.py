"""The trace verdict for people: one self-contained HTML file (figures inline, no script).

`write_html(verdict, path)` reads the verdict exactly as `stillroom trace` prints it (JSON),
so a report can be rebuilt from a saved verdict. The page is reportkit/templates/
trace.html.j2; figures and the crash-safe write come from the report kit, and matplotlib and
jinja2 load only when a report is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stillroom.errors import InputError
from stillroom.reportkit.figures import Plot, figure_png, new_figure
from stillroom.reportkit.files import write_atomic
from stillroom.reportkit.pages import render

TARGET_COLOR, RAW_COLOR, ADJ_COLOR = "#c44e52", "#8da0cb", "#4c72b0"


def write_html(verdict: dict[str, Any], path: Path) -> Path:
    """Write the report of `verdict` to `path` (temp file, then rename); return `path`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"--html {path}: folder {path.parent} does not exist; create it first")
    ctx = {
        "suspect": verdict.get("suspect", ""),
        "served": _served(verdict.get("served")),
        "radio": _radio(verdict.get("radioactivity")),
        "match": _match(verdict.get("output_match")),
        "identity": verdict.get("identity"),
    }
    write_atomic(path, render("trace.html.j2", **ctx))
    return path


def _p(v: float) -> str:
    return f"{v:.3g}" if v >= 1e-4 or v == 0 else f"{v:.2e}"


def _radio(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if not r:
        return None
    read = r.get("mode") == "read"
    unit = "texts read" if read else "queries"
    if r.get("running"):  # a look of a test still going: what it shows so far
        rows = [
            ("status", "running: not a verdict until the test stops"),
            ("mode", r["mode"]),
            ("key", r["key_id"]),
            (f"p-value so far (x {len(r['looks'])} looks)", _p(r["p_value"])),
            ("read or asked so far", f"{r['queries']:,}"),
        ]
        return {"rows": rows, "statement": r["statement"], "plot": _plot_looks(r, unit)}
    if r.get("mode") == "mass":
        return _radio_mass(r)
    rows = [
        ("mode", "reading our watermarked texts" if read else "the suspect's own answers"),
        ("key", r["key_id"]),
        ("distinct (context, token) pairs scored", f"{r['tuples_scored']:,}"),
        ("green", f"{r['green']:,} ({r['green_rate']:.1%}; {r['gamma']:.0%} by chance)"),
        ("z-score", f"{r['z']:.2f}"),
        (f"p-value (exact binomial, x {len(r['looks'])} looks)", _p(r["p_value"])),
        (unit, f"{r['queries']:,}"),
        ("stopped", "p below the target" if r["stopped"] == "significant" else "budget spent"),
    ]
    return {"rows": rows, "statement": r.get("statement", ""), "plot": _plot_looks(r, unit)}


def _radio_mass(r: dict[str, Any]) -> dict[str, Any]:
    base = r.get("baseline")
    source = {
        "api-texts": f"its API's top {r.get('top_k')} log-probs on unwatermarked texts (echo)",
        "api-answers": f"its API's top {r.get('top_k')} log-probs on its own answers",
    }.get(r.get("source", ""), "the suspect's next-token distributions on unwatermarked texts")
    rows = [
        ("mode", source),
        ("key", r["key_id"]),
        ("texts read / positions", f"{r['queries']:,} / {r['positions']:,}"),
        ("green mass", f"{r['green_mass']:.2%} ({r['gamma']:.0%} by chance)"),
        ("baseline", f"{base}: green mass {r['baseline_green_mass']:.2%}" if base else "none"),
        ("z-score", f"{r['z']:.2f}"),
        (f"p-value (saddlepoint, x {len(r.get('looks') or [1])} looks)", _p(r["p_value"])),
        ("p-value bound (Chernoff, exact)", _p(r["p_bound"])),
    ]
    plot = _plot_looks(r, "texts or answers read") if r.get("looks") else None
    return {"rows": rows, "statement": r.get("statement", ""), "plot": plot}


def _twins(r: dict[str, Any]) -> str:
    k = int(r.get("twins", 1))
    return "a fresh twin" if k == 1 else f"{k} fresh twins"


def _served(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if not r:
        return None
    net = f", net of {r['baseline']}'s" if r["baseline"] else ""
    scoring = (
        f"its log-likelihood of each answer{net}"
        if r["scoring"] == "likelihood"
        else "the overlap of its greedy answer with each"
    )
    rows = [
        ("accounts", ", ".join(r["accounts"])),
        (f"answers served, each with {_twins(r)}", f"{r['pairs']:,}"),
        ("scored by", scoring),
        (
            "served answer preferred to every twin",
            f"{r['wins']:,} of {r['pairs']:,} ({r['ties']} ties)",
        ),
        ("mean preference", f"{r['mean_diff']:.4g}"),
        ("z-score", f"{r['z']:.2f}"),
        ("p-value (randomization over which was served, saddlepoint)", _p(r["p_value"])),
        ("p-value bound (Chernoff, exact)", _p(r["p_bound"])),
        ("queries" if r["scoring"] == "answers" else "texts read", f"{r['queries']:,}"),
        ("served but never received (left out)", f"{r.get('undelivered_skipped', 0):,}"),
    ]
    return {"rows": rows, "statement": r.get("statement", "")}


def _plot_looks(r: dict[str, Any], unit: str) -> Plot:
    looks = r["looks"]
    fig = new_figure(6.8, 3.8)
    ax = fig.subplots()
    xs = [lk["queries"] for lk in looks]
    floor = 1e-300  # a p-value of exactly 0 (underflow) still plots, at the bottom
    ax.plot(xs, [max(lk["p_value"], floor) for lk in looks], "o--", color=RAW_COLOR, label="raw p")
    adj = [max(lk["p_adjusted"], floor) for lk in looks]
    ax.plot(xs, adj, "o-", color=ADJ_COLOR, label="p x looks taken (what the verdict uses)")
    ax.axhline(r["target_p"], color=TARGET_COLOR, linestyle=":", label=f"target {r['target_p']:g}")
    ax.set_yscale("log")
    low = min([*adj, r["target_p"]])
    ax.set_ylim(max(low / 10, floor), 2)
    if len(xs) > 1 and xs[-1] / max(xs[0], 1) > 4:
        ax.set_xscale("log")
    else:
        ax.set_xlim(0, xs[-1] * 1.1)
    ax.set_xlabel(unit)
    ax.set_ylabel("p-value (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    caption = (
        f"The sequential test looks at {len(looks)} planned points and stops at the first "
        "whose p-value, multiplied by the number of looks taken (Bonferroni), is below the "
        "target, so stopping early does not inflate significance."
    )
    return Plot("looks", "p-value against queries", caption, figure_png(fig))


def _match(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if not m:
        return None
    rows = [
        (
            c["name"],
            c["role"],
            f"{c['match_rate']:.1%}",
            f"{c['wins']} / {c['losses']}" if c["role"] == "candidate" else "",
            _p(c["p_value"]) if c["role"] == "candidate" else "",
            _p(c["p_holm"]) if c["role"] == "candidate" else "",
        )
        for c in [*m["candidates"], *m["references"]]
    ]
    return {
        "rows": rows,
        "parent": m["parent"],
        "prompts": m["prompts"],
        "max_tokens": m["max_tokens"],
        "alpha": m["alpha"],
        "best_reference": m["best_reference"],
        "statement": m.get("statement", ""),
        "plot": _plot_match(m),
    }


def _plot_match(m: dict[str, Any]) -> Plot:
    models = [*m["candidates"], *m["references"]]
    fig = new_figure(6.8, max(2.4, 0.42 * len(models) + 1.2))
    ax = fig.subplots()
    names = [c["name"] for c in models][::-1]
    rates = [c["match_rate"] for c in models][::-1]
    colors = [
        TARGET_COLOR
        if c["name"] == m["parent"]
        else (ADJ_COLOR if c["role"] == "candidate" else "#999999")
        for c in models
    ][::-1]
    ax.barh(names, rates, color=colors)
    for y, v in enumerate(rates):
        ax.text(v, y, f" {v:.1%}", va="center", fontsize=8)
    ax.set_xlim(0, max([*rates, 0.01]) * 1.2)  # room for the labels
    ax.set_xlabel("share of the suspect's greedy answer tokens matched")
    ax.grid(alpha=0.3, axis="x")
    caption = (
        "Candidates in blue (the named parent in red), references in grey. The test compares "
        "each candidate with the closest reference prompt by prompt, not these averages."
    )
    return Plot("match", "Token match with the suspect", caption, figure_png(fig))


def identity_statement(claims: dict[str, int], asked: int) -> str:
    """What the identity answers show, and what they do not."""
    if not claims:
        return (
            f"Asked {asked} ways who made it, the suspect named no known maker. A model can be "
            "trained or prompted to say anything about itself, so this proves nothing either way."
        )
    said = ", ".join(f"{m} ({n})" for m, n in sorted(claims.items(), key=lambda kv: -kv[1]))
    return (
        f"Asked {asked} ways who made it, the suspect named: {said}. A distilled model often "
        "repeats its teacher's self-description, but a claim is evidence to weigh, never "
        "proof: it can be trained or prompted to say anything about itself."
    )
