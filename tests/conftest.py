"""What every test shares: no hub downloads, and a fresh PostgreSQL database when CI (or a
developer) names a server. Tests are laid out as src/stillroom is; builders in tests/helpers."""

from __future__ import annotations

import os

import pytest

# Before any test module imports transformers: weights and data come from disk only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def pg_database() -> str:
    """The URL of a new, empty database on the test PostgreSQL server (.ci/run starts one
    and names it in STILLROOM_TEST_PG_URL); skipped where none is named."""
    from tests.helpers.serve import PG_URL_ENV, fresh_pg_database

    if not os.environ.get(PG_URL_ENV):
        pytest.skip(f"no PostgreSQL server named in {PG_URL_ENV} (.ci/run starts one)")
    return fresh_pg_database()
