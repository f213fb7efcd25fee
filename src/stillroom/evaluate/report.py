"""The evaluation report: report.md, a self-contained report.html, and plots/*.png.

`write_report(run_dir, result)` turns an eval result (eval.json) into plots/quality_cost.png
(quality against cost per 1M requests, log x), plots/confusion.png (label tasks only:
row-normalised, counts annotated), plots/training_curves.png (loss per step, validation
metrics per eval step), report.md (headline, model table, figures linked), and report.html:
the same, figures embedded as data: URIs, inline CSS, no script, no external asset, from
reportkit/templates/evaluate.html.j2. Every file is written crash-safely (reportkit's
write_atomic). A figure without data is left out, and the notes say why.

eval.json as read here (`?` marks optional parts):

    run         str
    task        {kind: "classify" | "generate", labels?: [str], n_test: int, metric: str}
    headline?   str; `headline()` computes it when absent
    notes?      [str], shown under Notes
    examples?   [{prompt, gold?, teacher, student?, baseline?: str}]  text tasks' answers
    models      {teacher, student, baseline?: {name, role, quality: {metric: float},
                 fidelity: {agreement, kl, chrf_to_teacher?} | null, cost_per_1m_requests_usd,
                 efficiency: {params, disk_mb, latency_ms_p50, latency_ms_p95,
                              throughput_items_per_s, batch, peak_rss_mb, dtype,
                              throughput_min?, throughput_max?, latency_ms_min?,
                              latency_ms_max?, rounds?, passes?, weights_mb?}},
                 most_common?, copy_input?: {name, role: "trivial", quality}}
    verdict?    what evaluate/verdict.py found: paired gaps to the baseline and the floor
    confusion?  {labels: [str], teacher | student | baseline: [[int]]}  rows true, columns predicted
    training_logs?  {student | baseline: train_log.jsonl path, absolute or relative to the
                     working directory or to run_dir}
    settings    {cpu_hour_usd, machine, command}

matplotlib (an Agg canvas, no pyplot state) and jinja2 load only when a report is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from stillroom.evaluate.verdict import conservative_speedup
from stillroom.jsonl_texts import jsonl_lines
from stillroom.reportkit.figures import Plot, figure_png, new_figure
from stillroom.reportkit.files import write_atomic
from stillroom.reportkit.pages import render

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

ROLES = ("teacher", "student", "baseline")
COLORS = {"teacher": "#4c72b0", "student": "#dd8452", "baseline": "#55a868"}
OTHER_COLOR = "#8172b3"
PLOT_NAMES = ("quality_cost", "confusion", "training_curves")
MISSING = "—"
Log = list[dict[str, Any]]  # rows of a train_log.jsonl
LABELS = {"macro_f1": "macro F1", "agreement": "agreement with teacher", "kl": "KL to teacher"}
LABELS |= {"ce": "cross-entropy", "loss": "train loss"}
LABELS |= {"chrf": "chrF", "exact_match": "exact match", "chrf_to_teacher": "chrF against teacher"}
PERCENT_METRICS = {"chrf", "chrf_to_teacher"}  # scored 0-100


class ReportPaths(TypedDict):
    md: Path
    html: Path
    plots: list[Path]


def write_report(run_dir: Path, evaluated: Mapping[str, Any]) -> ReportPaths:
    """Write report.md, report.html and plots/*.png into `run_dir`; return their paths."""
    result = dict(evaluated)  # an EvalResult, read by key
    run_dir = Path(run_dir)
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = [str(n) for n in result.get("notes") or []]
    logs = _load_training_logs(run_dir, result.get("training_logs") or {}, notes)
    made = [_plot_quality_cost(result, notes), _plot_confusion(result, notes)]
    plots = [p for p in [*made, _plot_training(logs, notes)] if p is not None]
    plot_paths = [plots_dir / f"{p.name}.png" for p in plots]
    for plot, path in zip(plots, plot_paths, strict=True):
        write_atomic(path, plot.png)
    for name in set(PLOT_NAMES) - {p.name for p in plots}:
        (plots_dir / f"{name}.png").unlink(missing_ok=True)  # from an earlier eval of this run
    ctx = _context(result, plots, notes)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    write_atomic(md_path, _render_md(ctx))
    write_atomic(html_path, render("evaluate.html.j2", **ctx))
    return {"md": md_path, "html": html_path, "plots": plot_paths}


def headline(result: dict[str, Any]) -> str | None:
    """For an eval.json without one: the student's share of the teacher's score, always
    beside the teacher's margin over uniform chance (label tasks) and the baseline's score,
    then the cost and speed ratios (the speed the student's slowest timing round against the
    teacher's fastest, where rounds were kept); None without both models."""
    models = result.get("models") or {}
    teacher, student = models.get("teacher"), models.get("student")
    if not teacher or not student:
        return None
    metric = (result.get("task") or {}).get("metric") or "quality"
    text, beside = "the student", []
    tq, sq = _quality(teacher, metric), _quality(student, metric)
    if tq and sq is not None:
        text += f" keeps {100 * sq / tq:.1f}% of the teacher's {_label(metric)}"
        labels = (result.get("task") or {}).get("labels") or []
        if metric == "accuracy" and labels:
            beside.append(f"the teacher is {100 * (tq - 1 / len(labels)):.1f} points above "
                          f"uniform chance, {1 / len(labels):.1%}")  # fmt: skip
        if (bq := _quality(models.get("baseline") or {}, metric)) is not None:
            beside.append(f"the gold-only baseline scores {fmt_score(bq)}")
    text += f" ({'; '.join(beside)})" if beside else ""
    phrases = []
    tc, sc = (_num(m.get("cost_per_1m_requests_usd")) for m in (teacher, student))
    if tc and sc and min(tc, sc) > 0:
        more = "lower" if tc >= sc else "higher"
        phrases.append(f"{_ratio(max(tc / sc, sc / tc))}x {more} cost")
    if (speed := conservative_speedup(teacher, student)) is not None:
        phrases.append(f"{_ratio(speed)}x the speed")
    if phrases:
        text += " at " + " and ".join(phrases)
    return None if text == "the student" else text


# ---------------------------------------------------------------- numbers, formatted


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _label(key: str) -> str:
    if key.startswith("val_"):
        return "validation " + _label(key[4:])
    return LABELS.get(key, key.replace("_", " "))


def _ratio(r: float) -> str:
    return f"{r:.0f}" if r >= 10 else f"{r:.1f}"


def _sig(v: float) -> str:
    """Three significant digits, without exponents: 0.123, 12.3, 350, 1,234."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def fmt_count(v: Any) -> str:
    """268098176 -> 268M, 19400000 -> 19.4M, 1.2e9 -> 1.2B."""
    if not _is_num(v):
        return MISSING
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.0f}"


def fmt_usd(v: Any) -> str:
    """4.8 -> $4.80, 0.1234 -> $0.12, 0.0042 -> $0.0042, 1234.5 -> $1,234."""
    if not _is_num(v):
        return MISSING
    if v == 0 or abs(v) >= 0.01:
        return f"${v:,.0f}" if abs(v) >= 1000 else f"${v:,.2f}"
    return f"${v:.2g}"


def fmt_mb(v: Any) -> str:
    """74.2 -> 74.2 MB, 1072.4 -> 1.07 GB."""
    if not _is_num(v):
        return MISSING
    return f"{v / 1000:.3g} GB" if abs(v) >= 1000 else f"{_sig(v)} MB"


def fmt_ms(v: Any) -> str:
    return f"{_sig(v)} ms" if _is_num(v) else MISSING


def fmt_score(v: Any) -> str:
    return f"{v:.3f}" if _is_num(v) else MISSING


def _num(v: Any) -> float | None:
    return float(v) if _is_num(v) else None


def _quality(model: dict[str, Any], metric: str) -> float | None:
    return _num((model.get("quality") or {}).get(metric))


def _efficiency(model: dict[str, Any], key: str) -> Any:
    return (model.get("efficiency") or {}).get(key)


# ---------------------------------------------------------------- inputs


def _ordered(keys: Iterable[str]) -> list[str]:
    """Roles in report order: teacher, student, baseline, then any other."""
    keys = list(keys)
    return [r for r in ROLES if r in keys] + [k for k in keys if k not in ROLES]


def _models(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    models = result.get("models") or {}
    return [(r, models[r]) for r in _ordered(models) if isinstance(models[r], dict)]


def _find_log(run_dir: Path, given: str) -> Path | None:
    """A training log path as eval.json gives it: absolute, cwd-relative or run-relative."""
    p = Path(given)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, run_dir / p]
    # "runs/<name>/baseline/train_log.jsonl" from another working directory
    parts = p.parts
    candidates += [
        run_dir.joinpath(*parts[i + 1 :]) for i in range(len(parts) - 1) if parts[i] == run_dir.name
    ]
    return next((c for c in candidates if c.is_file()), None)


def _read_log(path: Path) -> tuple[Log, int]:
    """Rows of a train_log.jsonl merged by step, in step order; and the unreadable lines."""
    by_step: dict[int, dict[str, Any]] = {}
    bad = 0
    for _, line in jsonl_lines(path.read_text(encoding="utf-8", errors="replace")):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1  # e.g. a last line cut short by a crash
            continue
        if isinstance(row, dict) and _is_num(row.get("step")):
            by_step.setdefault(int(row["step"]), {}).update(row)  # a resumed run rewrites steps
        else:
            bad += 1
    return [by_step[s] for s in sorted(by_step)], bad


def _load_training_logs(run_dir: Path, given: dict[str, Any], notes: list[str]) -> dict[str, Log]:
    logs: dict[str, Log] = {}
    for role in _ordered(given):
        if not given[role]:
            continue
        path = _find_log(run_dir, str(given[role]))
        if path is None:
            notes.append(f"The {role}'s training log was not found: {given[role]}.")
            continue
        rows, bad = _read_log(path)
        if bad:
            notes.append(f"{bad} unreadable line(s) in the {role}'s training log were skipped.")
        if rows:
            logs[role] = rows
        else:
            notes.append(f"The {role}'s training log has no rows: {path}.")
    return logs


# ---------------------------------------------------------------- figures


def _color(role: str) -> str:
    return COLORS.get(role, OTHER_COLOR)


def _plot_quality_cost(result: dict[str, Any], notes: list[str]) -> Plot | None:
    from matplotlib.ticker import FuncFormatter

    metric = (result.get("task") or {}).get("metric") or "accuracy"
    points = []
    for role, model in _models(result):
        cost, q = _num(model.get("cost_per_1m_requests_usd")), _quality(model, metric)
        if cost is not None and cost > 0 and q is not None:
            points.append((role, str(model.get("name", role)), cost, q))
    if not points:
        notes.append(f"No model has a cost and a {_label(metric)} score: no quality/cost figure.")
        return None
    fig = new_figure(7.5, 4.6)
    ax = fig.subplots()
    costs = [p[2] for p in points]
    for role, name, cost, q in points:
        color = _color(role)
        ax.scatter(cost, q, s=90, color=color, zorder=3, edgecolor="white", label=f"{role}: {name}")
        # below when a better model sits at a similar cost (student and baseline share one)
        below = any(abs(math.log10(c / cost)) < 0.3 and qq > q for _, _, c, qq in points)
        left = len(points) > 1 and cost == max(costs)  # keep the label inside the axes
        style: dict[str, Any] = {"ha": "right" if left else "left", "color": color}
        offset = (-9 if left else 9, -9 if below else 9)
        score = f"{q:.1f}" if metric in PERCENT_METRICS else f"{q:.3f}"
        text = f"{role}\n{score} at {fmt_usd(cost)}"
        ax.annotate(
            text,
            (cost, q),
            offset,
            textcoords="offset points",
            va="top" if below else "bottom",
            **style,
        )
    ax.set_xscale("log")
    ax.set_xlim(min(costs) / 4, max(costs) * 4)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_usd(v)))
    _quality_axis(ax, result, metric, [p[3] for p in points])
    ax.set_xlabel("cost per 1M requests (USD, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8, scatterpoints=1)
    caption = (
        f"Test-set {_label(metric)} against the cost of serving one million requests; "
        "up and to the left is better."
    )
    return Plot("quality_cost", "Quality against cost", caption, figure_png(fig))


def _quality_axis(ax: Axes, result: dict[str, Any], metric: str, values: list[float]) -> None:
    """A 0-1 scale for 0-1 metrics, so small gaps are not blown up; chance for accuracy."""
    ax.set_ylabel(_label(metric))
    if metric in PERCENT_METRICS and all(0 <= v <= 100 for v in values):
        ax.set_ylim(0, 105)
    elif all(0 <= v <= 1 for v in values):
        ax.set_ylim(0, 1.05)
    labels = (result.get("task") or {}).get("labels") or []
    if metric == "accuracy" and len(labels) > 1:
        chance = 1 / len(labels)
        ax.axhline(chance, color="gray", linestyle=":", linewidth=1)
        text = f" chance (1/{len(labels)})"
        ax.text(
            0,
            chance,
            text,
            transform=ax.get_yaxis_transform(),
            va="bottom",
            color="gray",
            fontsize=8,
        )


def _matrices(result: dict[str, Any], notes: list[str]) -> tuple[list[str], list[tuple[str, Any]]]:
    import numpy as np

    conf = result.get("confusion") or {}
    labels = [str(x) for x in conf.get("labels") or (result.get("task") or {}).get("labels") or []]
    n = len(labels)
    found = []
    for role in _ordered(k for k in conf if k != "labels"):
        try:
            m = np.asarray(conf[role], dtype=float)
        except (TypeError, ValueError):
            m = np.zeros((0,))
        if n == 0 or m.shape != (n, n):
            notes.append(
                f"The {role}'s confusion matrix is not {n}x{n} (one row per label): left out."
            )
            continue
        found.append((role, m))
    return labels, found


def _plot_confusion(result: dict[str, Any], notes: list[str]) -> Plot | None:

    if not result.get("confusion"):
        return None
    labels, mats = _matrices(result, notes)
    if not mats:
        return None
    n, k = len(labels), len(mats)
    side = min(12.0, max(3.0, 0.36 * n + 1.2))  # inches per matrix; at most ~11 across
    ncols = max(1, min(k, int(11 // side)))
    nrows = math.ceil(k / ncols)
    fig = new_figure(side * ncols + 0.9, (side + 0.5) * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    models = dict(_models(result))
    images = []
    for ax, (role, m) in zip(axes, mats, strict=False):
        name = str((models.get(role) or {}).get("name", ""))
        name = name if len(name) <= 30 else name[:29] + "…"  # the full name is in the table
        images.append(_draw_matrix(ax, f"{role}: {name}", _color(role), labels, m))
    for ax in axes[k:]:
        ax.set_visible(False)
    shrink = min(0.8, 4 / (nrows * side))  # a colour bar at most ~4 inches long
    fig.colorbar(images[-1], ax=axes[:k].tolist(), shrink=shrink, label="share of the true class")
    caption = (
        "Rows are the true labels, columns the predictions; colour is the share of each true "
        "class, the number the count of test items."
    )
    return Plot("confusion", "Confusion matrices", caption, figure_png(fig))


def _draw_matrix(ax: Axes, title: str, color: str, labels: list[str], m: Any) -> AxesImage:
    """One confusion matrix `m` (n, n), rows true: colour the row share, print the counts."""
    import numpy as np

    n = len(labels)
    totals = m.sum(axis=1, keepdims=True)  # (n, 1)
    share = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)  # (n, n) rows sum to 1
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(n), labels, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(m) / m.sum() if m.sum() else float("nan")
    ax.set_title(f"{title}\naccuracy {acc:.3f}", fontsize=10, color=color)
    if n <= 20:
        _annotate_counts(ax, m, share)
    return image


def _annotate_counts(ax: Axes, counts: Any, share: Any) -> None:
    n = len(counts)
    size = 9 if n <= 10 else 7
    for i in range(n):
        for j in range(n):
            color = "white" if share[i, j] > 0.55 else "#1f2328"
            text = f"{int(counts[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)


def _plot_training(logs: dict[str, Log], notes: list[str]) -> Plot | None:
    keys = ["loss"] if any("loss" in r for rows in logs.values() for r in rows) else []
    keys += sorted({k for rows in logs.values() for r in rows for k in r if k.startswith("val_")})
    if not keys:
        if logs:
            notes.append("The training logs have no loss or validation metrics to plot.")
        return None
    ncols = min(len(keys), 2)
    nrows = math.ceil(len(keys) / ncols)
    fig = new_figure(5.4 * ncols, 3.3 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        for role, rows in logs.items():
            pts = [(r["step"], r[key]) for r in rows if _is_num(r.get(key))]
            if pts:
                _plot_series(ax, role, pts, smooth=key == "loss")
        ax.set_title(_label(key), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    caption = (
        "Training loss at every step (a moving average over the faint raw curve when steps are "
        "many) and validation metrics at every evaluation. The student's loss is its "
        "distillation objective, the baseline's the cross-entropy on gold labels: compare "
        "their shapes, not their levels."
    )
    return Plot("training_curves", "Training curves", caption, figure_png(fig))


def _plot_series(ax: Axes, role: str, pts: list[tuple[Any, Any]], smooth: bool) -> None:
    import numpy as np

    xs = np.asarray([p[0] for p in pts], dtype=float)
    ys = np.asarray([p[1] for p in pts], dtype=float)
    color = _color(role)
    if not smooth or len(xs) < 40:
        marker = "o" if len(xs) <= 30 else None
        ax.plot(xs, ys, color=color, label=role, marker=marker, markersize=3, linewidth=1.5)
        return
    window = max(2, len(xs) // 25)
    avg = np.convolve(ys, np.ones(window) / window, mode="valid")  # (len - window + 1,)
    ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(xs[window - 1 :], avg, color=color, label=role, linewidth=1.6)


# ---------------------------------------------------------------- documents


def _table(result: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Column roles, and rows of (label, one cell per model): metrics down, models across."""
    models = [m for _, m in _models(result)]
    metric = str((result.get("task") or {}).get("metric") or "")
    eff = _efficiency

    def scores(part: str) -> list[tuple[str, list[str]]]:
        seen = {k for m in models for k in (m.get(part) or {})}
        keys = ([metric] if metric in seen else []) + sorted(seen - {metric})

        def cell(m: dict[str, Any], k: str) -> str:
            v = (m.get(part) or {}).get(k)
            return f"{v:.1f}" if k in PERCENT_METRICS and _is_num(v) else fmt_score(v)

        return [(_label(k), [cell(m, k) for m in models]) for k in keys]

    def latency(m: dict[str, Any]) -> str:
        p50, p95 = eff(m, "latency_ms_p50"), eff(m, "latency_ms_p95")
        return f"{fmt_ms(p50)} / {fmt_ms(p95)}" if _is_num(p50) or _is_num(p95) else MISSING

    def throughput(m: dict[str, Any]) -> str:
        tp, batch = eff(m, "throughput_items_per_s"), eff(m, "batch")
        if not _is_num(tp):
            return MISSING
        low, high, passes = (eff(m, k) for k in ("throughput_min", "throughput_max", "passes"))
        spread = (f"; {_sig(low)}-{_sig(high)} over {passes} passes"
                  if _is_num(low) and _is_num(high) and _is_num(passes) else "")  # fmt: skip
        return f"{_sig(tp)} items/s" + (f" (batch {batch}{spread})" if _is_num(batch) else "")

    def memory(m: dict[str, Any]) -> str:
        peak, weights = eff(m, "peak_rss_mb"), eff(m, "weights_mb")
        return fmt_mb(peak) + (f" (weights {fmt_mb(weights)})" if _is_num(weights) else "")

    return [r for r, _ in _models(result)], [
        ("model", [str(m.get("name", MISSING)) for m in models]),
        *scores("quality"),
        *scores("fidelity"),
        ("parameters", [fmt_count(eff(m, "params")) for m in models]),
        ("disk", [fmt_mb(eff(m, "disk_mb")) for m in models]),
        ("served in", [str(eff(m, "dtype") or MISSING) for m in models]),
        ("latency p50 / p95", [latency(m) for m in models]),
        ("throughput", [throughput(m) for m in models]),
        ("peak memory", [memory(m) if m.get("efficiency") else MISSING for m in models]),
        ("cost per 1M requests", [fmt_usd(m.get("cost_per_1m_requests_usd")) for m in models]),
    ]


def _task_line(task: dict[str, Any]) -> str:
    kind, labels = task.get("kind", "task"), task.get("labels") or []
    text = f"Task: {kind}"
    if labels:
        shown = ", ".join(map(str, labels[:12])) + (", ..." if len(labels) > 12 else "")
        text += f" into {len(labels)} labels ({shown})"
    if _is_num(task.get("n_test")):
        text += f", {task['n_test']:,} test items"
    if task.get("metric"):
        text += f"; metric: {_label(task['metric'])}"
    against = task.get("quality_against")
    if against == "gold" and task.get("gold_field"):
        text += f" against the gold text ({task['gold_field']})"
    elif against == "teacher":
        text += " against the teacher's answers (no gold text)"
    return text + "."


def _context(result: dict[str, Any], plots: list[Plot], notes: list[str]) -> dict[str, Any]:
    roles, rows = _table(result)
    settings = result.get("settings") or {}
    items = [(k, str(settings[k])) for k in ("machine", "command") if settings.get(k)]
    if _is_num(price := settings.get("cpu_hour_usd")):
        items.insert(0, ("cost", f"local models priced at {fmt_usd(price)} per CPU-hour"))
    return {
        "run": str(result.get("run", "")),
        "headline": result.get("headline") or headline(result) or "",
        "task": _task_line(result.get("task") or {}),
        "roles": roles,
        "colors": {r: _color(r) for r in roles},
        "rows": rows,
        "plots": plots,
        "notes": notes,
        "settings": items,
        "examples": _examples(result),
    }


def _examples(result: dict[str, Any]) -> list[list[tuple[str, str]]]:
    """Each shown test item as (who, text) rows: prompt, gold, then the models in order."""
    out = []
    for ex in result.get("examples") or []:
        if not isinstance(ex, dict):
            continue
        keys = ["prompt", "gold", *_ordered(k for k in ex if k not in ("prompt", "gold"))]
        out.append([(k, _clip(str(ex[k]))) for k in keys if k in ex and ex[k] is not None])
    return out


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _render_md(ctx: dict[str, Any]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = [f"# Evaluation report: {ctx['run']}", ""]
    if ctx["headline"]:
        out += [f"**{ctx['headline']}**", ""]
    out += [ctx["task"], "", "## Models", ""]
    if not ctx["roles"]:
        out.append("No models in the result.")
    else:
        out.append("| | " + " | ".join(ctx["roles"]) + " |")
        out.append("| --- |" + " ---: |" * len(ctx["roles"]))
        out += [f"| {label} | {' | '.join(map(cell, cells))} |" for label, cells in ctx["rows"]]
    if ctx["plots"]:
        out += ["", "## Figures"]
    for p in ctx["plots"]:
        out += ["", f"### {p.title}", "", f"![{p.title}](plots/{p.name}.png)", "", p.caption]
    for i, rows in enumerate(ctx["examples"], 1):
        out += ["", "## Examples"] if i == 1 else []
        out += ["", f"### Test item {i}", "", "| | text |", "| --- | --- |"]
        out += [f"| {who} | {cell(text) or MISSING} |" for who, text in rows]
    if ctx["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in ctx["notes"]]
    if ctx["settings"]:
        out += ["", "## Settings", ""]
        out += [f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in ctx["settings"]]
    return "\n".join(out) + "\n"
