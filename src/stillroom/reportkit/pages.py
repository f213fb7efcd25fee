"""HTML pages from the jinja2 templates shipped in templates/ (package data)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


def render(template: str, **context: Any) -> str:
    """Render templates/`template` with `context`; every value is HTML-escaped, and a name
    the template uses but `context` lacks is an error rather than an empty string."""
    return _environment().get_template(template).render(**context)


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    loader = jinja2.PackageLoader("stillroom.reportkit", "templates")
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
