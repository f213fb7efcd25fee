"""Prompt log-probs through the gateway: completions with `echo` and `logprobs`, the model's
distribution over a text it is shown (what a grey-box trace reads through an API)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from stillroom.serve import accounts as acc
from stillroom.serve.app import create_app
from stillroom.serve.backends import LocalBackend
from stillroom.serve.db import open_db
from stillroom.serve.gateway import ServeSettings
from stillroom.teachers.base import GenerationParams, TeacherRequest
from stillroom.teachers.local import LocalTeacher
from stillroom.watermark.key import generate_key
from tests.helpers.serve import running
from tests.helpers.tiny_models import make_tiny_lm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny") / "lm")


def _serve(teacher: LocalTeacher, tmp_path: Path) -> Iterator[tuple[str, str]]:
    engine = open_db(str(tmp_path / "gateway.sqlite"))
    backend = LocalBackend(teacher, default_max_tokens=8, max_tokens_limit=64)
    app = create_app(engine, backend, ServeSettings(admin_token="admin-token"))
    _, key = acc.create_account(engine, "reader")
    with running(app) as url:
        yield url, key.key
    engine.dispose()


@pytest.fixture
def plain(folder: Path, tmp_path: Path) -> Iterator[tuple[str, str, LocalTeacher]]:
    teacher = LocalTeacher.load(str(folder), batch_size=4)
    for url, key in _serve(teacher, tmp_path):
        yield url, key, teacher


def _post(url: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def _model_logprobs(teacher: LocalTeacher, ids: list[int]) -> torch.Tensor:
    """(T - 1,) log-prob of each token after those before it, from one plain forward pass."""
    with torch.inference_mode():
        logits = teacher.lm(input_ids=torch.tensor([ids])).logits[0].float()
    return logits.log_softmax(-1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_echo_scores_every_prompt_token_as_the_model_does(
    plain: tuple[str, str, LocalTeacher],
) -> None:
    url, key, teacher = plain
    prompt = "the cat sat on the mat and the dog"
    body = {"model": teacher.model, "prompt": prompt, "echo": True, "max_tokens": 0}
    reply = _post(url, key, body | {"logprobs": 5, "return_tokens_as_token_ids": True})
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    lp = choice["logprobs"]
    ids = [int(t.removeprefix("token_id:")) for t in lp["tokens"]]
    assert ids == teacher.tokenizer(prompt)["input_ids"]  # <bos> first, as the model read it
    assert choice["text"] == prompt
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    expected = _model_logprobs(teacher, ids)
    got = torch.tensor(lp["token_logprobs"][1:])
    assert torch.allclose(got, expected, atol=1e-4)
    for t in range(1, len(ids)):
        top = lp["top_logprobs"][t]
        assert len(top) == 5
        best = max(top.values())
        assert lp["token_logprobs"][t] <= best + 1e-6
        if f"token_id:{ids[t]}" in top:
            assert math.isclose(top[f"token_id:{ids[t]}"], lp["token_logprobs"][t], abs_tol=1e-5)
    # As text, the tokens spell the prompt.
    as_text = _post(url, key, body | {"logprobs": 1}).json()["choices"][0]["logprobs"]
    assert "".join(as_text["tokens"]) == prompt


def test_echo_then_generation_and_bad_bodies(plain: tuple[str, str, LocalTeacher]) -> None:
    url, key, teacher = plain
    prompt = "once upon a time"
    base = {"model": teacher.model, "prompt": prompt, "temperature": 0, "max_tokens": 4}
    alone = _post(url, key, base).json()["choices"][0]["text"]
    echoed = _post(url, key, base | {"echo": True, "logprobs": 3}).json()["choices"][0]
    assert echoed["text"] == prompt + alone
    assert "".join(echoed["logprobs"]["tokens"]) == echoed["text"]
    refused = _post(url, key, {"model": teacher.model, "prompt": prompt, "max_tokens": 0})
    assert refused.status_code == 400
    assert "echo" in refused.json()["error"]["message"]
    too_many = _post(url, key, base | {"echo": True, "logprobs": 21})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "logprobs"


def test_a_watermarked_server_reports_the_same_distribution_shown_or_written(
    folder: Path,
) -> None:
    """Generated tokens' log-probs are the watermarked ones; so must a shown text's be, or
    comparing the two would reveal the green lists."""
    teacher = LocalTeacher.load(str(folder), batch_size=4, watermark=generate_key())
    params = GenerationParams(max_tokens=6, temperature=1.0, seed=5, top_logprobs=3)
    wrote = teacher.generate([TeacherRequest("a story about a fox", None, params)])[0]
    choice = wrote.choices[0]
    ids = list(wrote.prompt_token_ids or []) + list(choice.token_ids or [])
    shown = teacher.sequence_logprobs([ids], 3)[0]
    n = len(choice.token_ids or [])
    assert n > 0
    assert shown.chosen[-n:] == pytest.approx(choice.token_logprobs, abs=1e-4)
    assert (shown.top_ids[-n - 1 : -1] == np.asarray(choice.top_ids)).all()
    plain = LocalTeacher.load(str(folder), batch_size=4).sequence_logprobs([ids], 3)[0]
    assert not np.allclose(plain.chosen[-n:], shown.chosen[-n:], atol=1e-3)


def test_token_id_prompts_are_scored_as_given_and_refused_for_generation(
    plain: tuple[str, str, LocalTeacher],
) -> None:
    url, key, teacher = plain
    ids = [int(i) for i in teacher.tokenizer("the cat sat on the mat")["input_ids"]]
    body = {"model": teacher.model, "prompt": ids, "echo": True, "max_tokens": 0,
            "logprobs": 3, "return_tokens_as_token_ids": True}  # fmt: skip
    reply = _post(url, key, body)
    assert reply.status_code == 200, reply.text
    lp = reply.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == [f"token_id:{i}" for i in ids]
    assert lp["token_logprobs"][1:] == pytest.approx(
        _model_logprobs(teacher, ids).tolist(), abs=1e-4
    )
    for bad in ({**body, "echo": False, "max_tokens": 4}, {**body, "prompt": [10**9]}):
        refused = _post(url, key, bad)
        assert refused.status_code == 400 and "prompt" in refused.json()["error"]["message"]


def test_return_token_ids_gives_the_answer_and_prompt_ids(
    plain: tuple[str, str, LocalTeacher],
) -> None:
    url, key, teacher = plain
    body = {"model": teacher.model, "prompt": "the cat sat", "max_tokens": 6, "seed": 3,
            "temperature": 1.0, "logprobs": 2, "return_tokens_as_token_ids": True,
            "return_token_ids": True}  # fmt: skip
    reply = _post(url, key, body)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["prompt_token_ids"] == teacher.tokenizer("the cat sat")["input_ids"]
    named = [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]]
    assert choice["token_ids"][: len(named)] == named and len(choice["token_ids"]) >= len(named)
    assert teacher.tokenizer.decode(choice["token_ids"], skip_special_tokens=True) == choice["text"]
    plain_reply = _post(url, key, {k: v for k, v in body.items() if k != "return_token_ids"})
    assert "token_ids" not in plain_reply.json()["choices"][0]
