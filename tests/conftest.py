"""What every test shares: no hub downloads, and a fresh PostgreSQL database when CI (or a
developer) names a server. Tests are laid out as src/stillroom is; builders in tests/helpers."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Before any test module imports transformers: weights and data come from disk only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Property tests check behaviour, not speed: hypothesis's 200 ms per-example deadline failed
# on a machine whose two cores other jobs were using. Speed is measured in benchmarks/.
settings.register_profile("stillroom", deadline=None)
settings.load_profile("stillroom")


@pytest.fixture
def pg_database() -> str:
    """The URL of a new, empty database on the test PostgreSQL server (.ci/run starts one
    and names it in STILLROOM_TEST_PG_URL); skipped where none is named."""
    from tests.helpers.serve import PG_URL_ENV, fresh_pg_database

    if not os.environ.get(PG_URL_ENV):
        pytest.skip(f"no PostgreSQL server named in {PG_URL_ENV} (.ci/run starts one)")
    return fresh_pg_database()


@pytest.fixture(scope="session")
def vllm_url() -> str:
    """The base URL of the test vLLM server (.ci/run starts one with scripts/start-vllm and
    names it in STILLROOM_TEST_VLLM_URL). Skipped where none is named, except where
    STILLROOM_REQUIRE_VLLM is set (CI): there a missing server fails the test."""
    url = os.environ.get("STILLROOM_TEST_VLLM_URL")
    if not url:
        if os.environ.get("STILLROOM_REQUIRE_VLLM"):
            pytest.fail("STILLROOM_REQUIRE_VLLM is set but no STILLROOM_TEST_VLLM_URL is named")
        pytest.skip("no vLLM server named in STILLROOM_TEST_VLLM_URL (.ci/run starts one)")
    return url


@pytest.fixture(scope="session")
def vllm_watermark_key(vllm_url: str) -> str:
    """The key file the test vLLM server's watermark plugin loaded (STILLROOM_TEST_VLLM_KEY;
    .ci/run makes one and starts vLLM with it, marking only requests that name it)."""
    path = os.environ.get("STILLROOM_TEST_VLLM_KEY")
    if not path:
        if os.environ.get("STILLROOM_REQUIRE_VLLM"):
            pytest.fail("STILLROOM_REQUIRE_VLLM is set but no STILLROOM_TEST_VLLM_KEY is named")
        pytest.skip("the test vLLM server has no watermark key named in STILLROOM_TEST_VLLM_KEY")
    return path
