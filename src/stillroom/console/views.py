"""What the console shows: pages from its templates, and a case's pictures, kept a while.

A case's feature picture depends only on the run that flagged it last, so it is kept until
that changes; its activity picture reads the live request log, so it is kept a minute.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from stillroom.console import cases as C
from stillroom.console import figures

if TYPE_CHECKING:
    import jinja2

KINDS = ("features", "timeline")
KEEP_S = {"features": float("inf"), "timeline": 60.0}
_MAX_KEPT = 256


def page(template: str, **context: Any) -> str:
    """templates/`template` with `context`, every value HTML-escaped."""
    return _environment().get_template(template).render(**context)


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stillroom.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = when
    return env


class _Kept:
    """A small LRU of PNGs, each with the time it was made."""

    def __init__(self) -> None:
        self.items: OrderedDict[tuple[Any, ...], tuple[float, bytes]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...], keep_s: float) -> bytes | None:
        with self.lock:
            found = self.items.get(key)
            if found is None or time.monotonic() - found[0] > keep_s:
                return None
            self.items.move_to_end(key)
            return found[1]

    def put(self, key: tuple[Any, ...], png: bytes) -> None:
        with self.lock:
            self.items[key] = (time.monotonic(), png)
            while len(self.items) > _MAX_KEPT:
                self.items.popitem(last=False)


_kept = _Kept()


def png(engine: Engine, case_id: int, kind: str) -> bytes:
    """One of a case's pictures (KINDS) as PNG."""
    data = C.case(engine, case_id)
    key = (str(engine.url), case_id, data["run"]["id"], kind)
    found = _kept.get(key, KEEP_S[kind])
    if found is not None:
        return found
    if kind == "features":
        made = figures.features_png(data["features"], data["run"]["calibration"])
    else:
        made = figures.timeline_png(
            C.hourly_activity(engine, [a["account_id"] for a in data["accounts"]])
        )
    _kept.put(key, made)
    return made
