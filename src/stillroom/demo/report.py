"""The story's HTML report: one page, in the order things happened, figures inline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stillroom.evaluate.report import Plot, figure_png, new_figure, write_atomic
from stillroom.trace.report import page_head

DISTILLER_COLOR, BENIGN_COLOR, CONTROL_COLOR, TARGET_COLOR = "#c44e52", "#4c72b0", "#55a868", "#888"


def write_story(story: dict[str, Any], path: Path) -> Path:
    """Render `story` (what `run_demo` measured) to `path`; return `path`."""
    import jinja2

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
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    write_atomic(path, env.from_string(TEMPLATE).render(**ctx).encode("utf-8"))
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


TEMPLATE = (
    page_head("stillroom demo: a distillation, found and traced")
    + """<body>
<main>
<h1>A distillation, found and traced</h1>
<div class="statement">{% for line in headline %}<p>{{ line }}</p>{% endfor %}</div>

<h2>1. The API and its traffic</h2>
<p>Gemma 3 270M served by <code>stillroom serve</code>, every answer watermarked.
{{ s.traffic.benign_requests }} requests from {{ s.cast.benign | length }} ordinary users;
{{ s.traffic.distiller.ok }} from the distiller's {{ s.cast.distiller | length }} accounts
({{ s.cast.distiller | join(", ") }}).</p>
<figure><img src="{{ plots[0].data_uri }}" alt="{{ plots[0].title }}">
<figcaption>{{ plots[0].caption }}</figcaption></figure>

<h2>2. What the distiller spent and built</h2>
<table>
<tr><th></th><th>rival (watermarked answers)</th>
<th>control (same prompts, no watermark)</th></tr>
<tr><td>answers harvested</td><td>{{ s.traffic.distiller.ok }}</td>
<td>{{ s.control_harvest.ok }}</td></tr>
<tr><td>answer tokens</td><td>{{ s.traffic.distiller.completion_tokens }}</td>
<td>{{ s.control_harvest.completion_tokens }}</td></tr>
<tr><td>harvest time</td><td>{{ "%.0f" | format(s.traffic.distiller.elapsed_s) }} s</td>
<td>{{ "%.0f" | format(s.control_harvest.elapsed_s) }} s</td></tr>
{% for k in ["steps", "final_train_loss", "best_val"] %}
<tr><td>student: {{ k | replace("_", " ") }}</td>
<td>{{ s.students.distiller[k] }}</td><td>{{ s.students.control[k] }}</td></tr>{% endfor %}
</table>

<h2>3. The audit</h2>
<p>{{ s.audit.flagged | length }} accounts flagged:
{{ s.audit.flagged | join(", ") or "none" }}.</p>
<figure><img src="{{ plots[1].data_uri }}" alt="{{ plots[1].title }}">
<figcaption>{{ plots[1].caption }}</figcaption></figure>
<table><tr><th>log as it stood at</th><th>requests</th>
<th>distiller accounts flagged</th><th>ordinary users flagged</th></tr>
{% for t in s.audit.timeline %}
<tr><td>{{ "%.0f%%" | format(100 * t.fraction_of_traffic_time) }} of the traffic's time</td>
<td>{{ t.requests_logged }}</td>
<td>{{ t.distiller_accounts_flagged | join(", ") or ("too few accounts yet" if t.note
else "none") }}</td>
<td>{{ t.benign_accounts_flagged }}</td></tr>{% endfor %}</table>
{% for f in s.audit.evidence %}<p><b>{{ f.accounts | join(", ") }}</b> (score {{ f.score }}):</p>
<ul>{% for e in f.evidence %}<li>{{ e }}</li>{% endfor %}</ul>{% endfor %}

<h2>4. The trace</h2>
<figure><img src="{{ plots[2].data_uri }}" alt="{{ plots[2].title }}">
<figcaption>{{ plots[2].caption }}</figcaption></figure>
<table><tr><th></th><th>queries</th><th>pairs scored</th><th>green</th><th>p-value</th></tr>
{% for name, t in s.traces.items() %}
<tr><td>{{ "rival's student" if name == "distiller" else "control student" }}</td>
<td>{{ t.queries }}</td><td>{{ t.tuples_scored }}</td>
<td>{{ "%.1f%%" | format(100 * t.green_rate) }} (chance {{ "%.0f%%" | format(100 * t.gamma) }})</td>
<td>{{ p(t.p_value) }}</td></tr>{% endfor %}</table>
<p>A small p-value says the suspect's text carries our key's green pairs more often than
chance allows, which text never exposed to our watermarked outputs does not. It does not say
how much of its training data was ours.</p>

<h2>Run</h2>
<table>{% for k, v in s.stage_s.items() %}
<tr><td>{{ k }}</td><td>{{ "%.0f" | format(v) }} s</td></tr>{% endfor %}
<tr><td>total</td><td>{{ "%.0f" | format(s.total_s) }} s</td></tr></table>
</main>
</body>
</html>
"""
)
