"""A case's pictures as PNG: its scored features against the benign percentiles, and its
activity by hour and by day."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stillroom.audit.catalog import FEATURES
from stillroom.reportkit.figures import figure_png, new_figure

UNIT_COLOUR, BENIGN_COLOUR = "#c0392b", "#9aa5b1"


def features_png(features: dict[str, Any], calibration: dict[str, Any]) -> bytes:
    """One row per scored feature, in spreads above the benign median (the units the score
    adds up): the benign median, 90th and 99th percentiles in grey, the unit in red."""
    names = list(calibration["features"])
    fig = new_figure(7.0, 0.55 * len(names) + 1.0)
    ax = fig.add_subplot()
    for row, name in enumerate(names):
        centre, spread = calibration["center"][row], calibration["scale"][row] or 1.0
        pct = [(q - centre) / spread for q in calibration["percentiles"].get(name, [])]
        y = len(names) - 1 - row
        if pct:
            ax.plot([min(pct), max(pct)], [y, y], color=BENIGN_COLOUR, lw=6, solid_capstyle="butt")
            ax.plot(pct, [y] * len(pct), "|", color="#4a5560", ms=14, mew=2)
        value = float(features.get(name) or 0.0)
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
    ax.set_xlabel("robust spreads above the benign median (grey: benign p50, p90, p99)")
    ax.set_title("scored features: this unit (red) against benign accounts", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)


def timeline_png(hourly: list[tuple[int, int]]) -> bytes:
    """Requests per hour over the log's time (top), and per day (bottom), in UTC."""
    fig = new_figure(7.0, 4.2)
    top, bottom = fig.subplots(2, 1)
    if not hourly:
        top.text(0.5, 0.5, "no requests in the log", ha="center", transform=top.transAxes)
        bottom.set_axis_off()
        return figure_png(fig)
    hours = [datetime.fromtimestamp(h * 3600, UTC) for h, _ in hourly]
    top.bar(hours, [n for _, n in hourly], width=1 / 24, color=UNIT_COLOUR, align="edge")
    top.set_ylabel("requests / hour")
    top.set_title("activity by hour (UTC)", fontsize=10)
    days: dict[int, int] = {}
    for h, n in hourly:
        days[h // 24] = days.get(h // 24, 0) + n
    day_ts = [datetime.fromtimestamp(d * 86400, UTC) for d in days]
    bottom.bar(day_ts, list(days.values()), width=0.8, color="#2c3e50", align="edge")
    bottom.set_ylabel("requests / day")
    bottom.set_title("activity by day (UTC)", fontsize=10)
    for ax in (top, bottom):
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.autofmt_xdate()
    return figure_png(fig)
