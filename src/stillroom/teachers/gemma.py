"""The built-in teacher's name, kept importable here; its loading lives in
`stillroom.runtime.gemma`."""

from __future__ import annotations

from stillroom.runtime.gemma import DEFAULT_TEACHER

__all__ = ["DEFAULT_TEACHER"]
