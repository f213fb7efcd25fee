"""A model folder behind a real `stillroom serve` gateway, for benchmarks that read a suspect
only through its API."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers


@contextmanager
def served(folder: str) -> Iterator[tuple[str, str, str]]:
    """The model behind a `stillroom serve` gateway (no watermark, a throwaway SQLite
    database), in a thread of this process: (base URL, API key, model name)."""
    import tempfile

    from tests.helpers.serve import running

    from stillroom.serve import accounts
    from stillroom.serve.app import create_app
    from stillroom.serve.backends import LocalBackend
    from stillroom.serve.db import open_db
    from stillroom.serve.gateway import ServeSettings
    from stillroom.teachers.local import LocalTeacher

    with tempfile.TemporaryDirectory() as tmp:
        engine = open_db(f"{tmp}/gateway.sqlite")
        backend = LocalBackend(
            LocalTeacher.load(folder, batch_size=8), default_max_tokens=64, max_tokens_limit=256
        )
        _, key = accounts.create_account(engine, "tracer")
        try:
            with running(create_app(engine, backend, ServeSettings(admin_token="a" * 16))) as url:
                yield url, key.key, backend.model_id
        finally:
            engine.dispose()


def api_logprobs(
    folder: str, tokenizer: Any, messages: Sequence[Any], texts: dict[str, list[str]]
) -> dict[str, Any]:
    """Each answer's mean log-prob after its chat prompt, read through the served model's
    prompt log-probs (echo): one array per named list of answers, over the first prompts."""
    from stillroom.trace.api_likelihood import api_answer_logprobs
    from stillroom.trace.api_mass import LogprobsApi

    with served(folder) as (url, api_key, model):
        api = LogprobsApi(url, model, api_key, tokenizer, k=1)
        return {
            name: api_answer_logprobs(api, tokenizer, messages[: len(t)], t)
            for name, t in texts.items()
        }
