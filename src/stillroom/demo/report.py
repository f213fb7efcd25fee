"""The story's HTML report: one page, in the order things happened, figures inline
(reportkit/templates/demo.html.j2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stillroom.reportkit.figures import Plot, figure_png, new_figure
from stillroom.reportkit.files import write_atomic
from stillroom.reportkit.pages import render

DISTILLER_COLOR, BENIGN_COLOR, CONTROL_COLOR, TARGET_COLOR = "#c44e52", "#4c72b0", "#55a868", "#888"


def write_story(story: dict[str, Any], path: Path) -> Path:
    """Render `story` (what `run_demo` measured) to `path`; return `path`."""
    ctx = {
        "s": story,
        "headline": headline(story),
        "plots": [
            _plot_traffic(story["audit"]),
            _plot_scores(story["audit"]),
            _plot_traces(story["traces"]),
        ],
        "p": _p,
    }
    write_atomic(path, render("demo.html.j2", **ctx))
    return path


def headline(story: dict[str, Any]) -> list[str]:
    """The story in four sentences, every figure from the run."""
    d = story["traffic"]["distiller"]
    a = story["audit"]
    rival, control = story["traces"]["distiller"], story["traces"]["control"]
    distillers = story["cast"]["distiller"]
    caught = [x for x in a["flagged"] if x in distillers]
    benign_flagged = [x for x in a["flagged"] if x not in distillers]
    first = next((t for t in a["timeline"] if t["distiller_accounts_flagged"]), None)
    student = story["students"]["distiller"].get("student") or {}
    when = (
        f"; the same audit on the log as it stood at {first['fraction_of_traffic_time']:.0%} "
        f"of the traffic's time ({first['requests_logged']:,} requests) already flagged "
        f"{', '.join(first['distiller_accounts_flagged'])}"
        if first
        else ""
    )
    return [
        f"A distiller used {len(distillers)} accounts to send {d['ok']:,} requests and received "
        f"{d['completion_tokens']:,} tokens of watermarked answers, ${d['run_total_usd']:.4f} at "
        f"${story['price_usd_per_1m']['output']:.2f} per 1M output tokens (an assumed API "
        "price).",
        f"It trained a {student.get('params_student', 0) / 1e6:.1f}M-parameter student in "
        f"{story['students']['distiller'].get('steps')} steps.",
        f"The audit flagged {len(caught)} of its {len(distillers)} accounts and "
        f"{len(benign_flagged)} of {len(story['cast']['benign'])} ordinary users{when}.",
        f"Traced with the watermark key, the rival's student gives p = {_p(rival['p_value'])} "
        f"after {rival['queries']:,} queries; a control student trained on the same prompts "
        f"without the watermark gives p = {_p(control['p_value'])} "
        f"after {control['queries']:,}.",
    ]


def _p(v: float) -> str:
    return f"{v:.3g}" if v >= 1e-4 or v == 0 else f"{v:.2e}"


def _plot_traffic(audit: dict[str, Any]) -> Plot:
    fig = new_figure(6.8, 3.4)
    ax = fig.subplots()
    for role, color in (("distiller", DISTILLER_COLOR), ("benign", BENIGN_COLOR)):
        ts = [t for t, r in audit["requests"] if r == role]
        ax.plot(ts, range(1, len(ts) + 1), color=color, label=f"{role} requests")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("requests so far")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    caption = (
        "Every request the gateway logged, as it arrived. The audit sees only this log: "
        "accounts, keys, times, prompts, parameters and answers; never who is who."
    )
    return Plot("traffic", "Traffic through the gateway", caption, figure_png(fig))


def _plot_scores(audit: dict[str, Any]) -> Plot:
    units = audit["units"]
    fig = new_figure(6.8, 3.4)
    ax = fig.subplots()
    colors = [DISTILLER_COLOR if u["role"] == "distiller" else BENIGN_COLOR for u in units]
    ax.bar(range(len(units)), [u["score"] for u in units], color=colors)
    ax.axhline(audit["threshold"], color=TARGET_COLOR, linestyle=":", label="flag threshold")
    ax.set_xlabel("accounts (or joined actors), highest score first; red: the distiller's")
    ax.set_ylabel("audit score")
    ax.set_xticks([])
    ax.legend(fontsize=8)
    caption = (
        f"Each account's anomaly score against the log's own population; the threshold is set "
        f"without labels for a {audit['fpr']:.1%} false-positive rate, and accounts with fewer "
        f"than {audit['min_requests']} requests are not flagged."
    )
    return Plot("audit", "Audit scores", caption, figure_png(fig))


def _plot_traces(traces: dict[str, Any]) -> Plot:
    fig = new_figure(6.8, 3.6)
    ax = fig.subplots()
    floor = 1e-300
    for name, color, label in (
        ("distiller", DISTILLER_COLOR, "rival's student"),
        ("control", CONTROL_COLOR, "control student"),
    ):
        looks = traces[name]["looks"]
        xs = [lk["queries"] for lk in looks]
        ax.plot(xs, [max(lk["p_adjusted"], floor) for lk in looks], "o-", color=color,
                label=label)  # fmt: skip
    target = traces["distiller"]["target_p"]
    ax.axhline(target, color=TARGET_COLOR, linestyle=":", label=f"target {target:g}")
    ax.set_yscale("log")
    ax.set_xlabel("queries to the suspect")
    ax.set_ylabel("p-value x looks (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    caption = (
        "Radioactivity: each suspect answers held-out questions; its (previous token, token) "
        "pairs are scored with the key, each pair once, pairs in the prompt skipped; exact "
        "binomial p-value, multiplied by the looks taken."
    )
    return Plot("trace", "Did the student learn from our outputs?", caption, figure_png(fig))
