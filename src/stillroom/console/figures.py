"""A case's pictures as PNG: its scored features against the benign percentiles, and its
activity by hour and by day."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stillroom.audit.catalog import FEATURES
from stillroom.reportkit.figures import figure_png, new_figure

UNIT_COLOUR, BENIGN_COLOUR = "#c0392b", "#9aa5b1"


def _fixed(fig: Any, *, left: float, bottom: float) -> dict[str, float]:
    """Fixed margins (as gridspec arguments) instead of the constrained layout, which
    measures every label first: half of a picture's drawing time, on a page a reviewer
    waits for."""
    fig.set_layout_engine("none")
    height = fig.get_figheight()
    return {"left": left, "right": 0.97, "top": 1 - 0.35 / height, "bottom": bottom / height}


def features_png(features: dict[str, Any], calibration: dict[str, Any]) -> bytes:
    """One row per scored feature, in spreads above the benign median (the units the score
    adds up): the benign median, 90th and 99th percentiles in grey, the unit in red."""
    names = list(calibration["features"])
    fig = new_figure(7.0, 0.55 * len(names) + 1.0)
    ax = fig.add_subplot(fig.add_gridspec(1, 1, **_fixed(fig, left=0.2, bottom=0.6))[0])
    xs = [0.0]
    for row, name in enumerate(names):
        centre, spread = calibration["center"][row], calibration["scale"][row] or 1.0
        pct = [(q - centre) / spread for q in calibration["percentiles"].get(name, [])]
        y = len(names) - 1 - row
        if pct:
            ax.plot([min(pct), max(pct)], [y, y], color=BENIGN_COLOUR, lw=6, solid_capstyle="butt")
            ax.plot(pct, [y] * len(pct), "|", color="#4a5560", ms=14, mew=2)
        value = float(features.get(name) or 0.0)
        xs += [*pct, (value - centre) / spread]
        ax.plot([(value - centre) / spread], [y], "o", color=UNIT_COLOUR, ms=9)
        shown = FEATURES[name].show(value) if name in FEATURES else f"{value:.2f}"
        ax.annotate(
            shown,
            ((value - centre) / spread, y),
            xytext=(8, 6),
            textcoords="offset points",
            fontsize=8,
            color=UNIT_COLOUR,
        )
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in reversed(names)], fontsize=8)
    ax.axvline(0, color="#4a5560", lw=0.6, ls=":")
    span = max(xs) - min(xs) or 1.0
    ax.set_xlim(min(xs) - 0.05 * span, max(xs) + 0.15 * span)  # room for the value's label
    ax.set_xlabel("robust spreads above the benign median (grey: benign p50, p90, p99)")
    ax.set_title("scored features: this unit (red) against benign accounts", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)


def timeline_png(hourly: list[tuple[int, int]]) -> bytes:
    """Requests per hour over the log's time (top), and per day (bottom), in UTC. Drawn as
    steps, not one bar per hour: a week is 168 bars, and bars cost a shape each."""
    import numpy as np
    from matplotlib import dates

    fig = new_figure(7.0, 4.2)
    margins = _fixed(fig, left=0.1, bottom=0.3)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"hspace": 0.5, **margins})
    if not hourly:
        top.text(0.5, 0.5, "no requests in the log", ha="center", transform=top.transAxes)
        bottom.set_axis_off()
        return figure_png(fig)
    first, last = hourly[0][0], hourly[-1][0]
    counts = np.zeros(last - first + 1)
    for h, n in hourly:
        counts[h - first] = n
    epoch = dates.date2num(datetime.fromtimestamp(0, UTC))
    edges = epoch + np.arange(first, last + 2) / 24.0  # matplotlib dates count days
    top.stairs(counts, edges, fill=True, color=UNIT_COLOUR)
    top.set_ylabel("requests / hour")
    top.set_title("activity by hour (UTC)", fontsize=10)
    day0, day1 = first // 24, last // 24
    per_day = np.zeros(day1 - day0 + 1)
    for h, n in hourly:
        per_day[h // 24 - day0] += n
    day_edges = epoch + np.arange(day0, day1 + 2)
    bottom.stairs(per_day, day_edges, fill=True, color="#2c3e50")
    bottom.set_ylabel("requests / day")
    bottom.set_title("activity by day (UTC)", fontsize=10)
    for ax in (top, bottom):
        ax.xaxis_date(UTC)
        ax.xaxis.set_major_formatter(dates.DateFormatter("%m-%d", tz=UTC))
        ax.set_xlim(edges[0], edges[-1])
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)
