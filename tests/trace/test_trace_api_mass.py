"""Grey-box radioactivity: the green-mass test on the top-k log-probs a real gateway
(`stillroom serve` over the suspect) returns, on our texts (echo) and on its own answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from stillroom.serve import accounts as acc
from stillroom.serve.app import create_app
from stillroom.serve.backends import LocalBackend
from stillroom.serve.db import open_db
from stillroom.serve.gateway import ServeSettings
from stillroom.teachers.local import LocalTeacher
from stillroom.trace.api_mass import LogprobsApi, api_mass_test, topk_weights
from stillroom.trace.mass import combine, green_bits, read_distributions, score
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey
from tests.helpers.serve import running
from tests.helpers.tiny_models import watermarked_student

pytestmark = pytest.mark.integration

KEY = WatermarkKey(b"m" * 32, delta=3.0, context_width=1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return watermarked_student(tmp_path_factory.mktemp("api-mass"), KEY)


@contextmanager
def served(folder: Path, tmp_path: Path) -> Iterator[tuple[str, str, LocalTeacher]]:
    """The model in `folder` behind a real gateway (no watermark): (URL, key, the model)."""
    model = LocalTeacher.load(str(folder), batch_size=16)
    engine = open_db(str(tmp_path / f"{folder.name}-{uuid.uuid4().hex[:8]}.sqlite"))
    backend = LocalBackend(model, default_max_tokens=48, max_tokens_limit=256)
    _, key = acc.create_account(engine, "tracer")
    with running(create_app(engine, backend, ServeSettings(admin_token="a" * 16))) as url:
        yield url, key.key, model
    engine.dispose()


def test_the_api_top_k_are_the_models_own(setting: dict, tmp_path: Path) -> None:
    """Read through the API, the weights are the open-weights reading cut to the top k."""
    root, tok = setting["root"], setting["tokenizer"]
    with served(root / "student", tmp_path) as (url, key, model):
        api = LogprobsApi(url, model.model, key, tok, k=5)
        tops = api.text_topk(setting["plain"][:10])
    assert api.ask_ids  # our gateway returns token ids
    got, positions = topk_weights(tops, 1)
    local, _ = read_distributions(model, [], tok, 1, top_k=5, positions_of=positions)
    assert (got.contexts == local.contexts).all() and (got.counts == local.counts).all()
    # The API's top 5 may hold a special token (the end of text), which is dropped; the
    # local reading skips those and keeps a fifth text token instead.
    mine = {tuple(r): p for r, p in zip(got.rows.tolist(), got.prob, strict=True)}
    theirs = {tuple(r): p for r, p in zip(local.rows.tolist(), local.prob, strict=True)}
    assert set(mine) <= set(theirs) and len(mine) >= 0.8 * len(theirs)
    # Each probability is the model's own at that position (full vocabulary).
    for top in tops:
        with torch.inference_mode():
            ids = np.where(top.ids < 0, tok.bos_token_id, top.ids)  # <bos>: special, so -1
            logits = model.lm(input_ids=torch.from_numpy(ids)[None]).logits[0]
        probs = logits.float().softmax(-1).numpy()
        for t in range(1, len(top.ids)):
            have = top.top_ids[t] >= 0
            assert np.allclose(top.top_p[t][have], probs[t - 1][top.top_ids[t][have]], atol=1e-4)


def test_a_student_is_caught_through_its_api_and_the_null_holds(
    setting: dict, tmp_path: Path
) -> None:
    root, tok, plain = setting["root"], setting["tokenizer"], setting["plain"]
    teacher = LocalTeacher.load(str(root / "teacher"))
    looks: list[object] = []
    with served(root / "student", tmp_path) as (url, key, model):
        api = LogprobsApi(url, model.model, key, tok, k=20)
        on_texts = api_mass_test(
            api, KEY, tok, texts=plain, baseline_model=teacher, baseline="teacher",
            progress=looks.append,
        )  # fmt: skip
        on_answers = api_mass_test(
            api, KEY, tok, prompts=["tell me a story", "what is the news"], budget=64,
            baseline_model=teacher, max_tokens=32, temperature=1.0,
        )  # fmt: skip
    assert on_texts.source == "api-texts" and on_texts.p_value < 1e-6, on_texts
    assert looks and on_texts.looks == looks
    assert on_answers.source == "api-answers" and on_answers.p_value < 1e-3, on_answers
    # Under keys it never saw, the student read through its API is a null suspect too, net
    # of the teacher or not: over many keys its p-values are uniform.
    with served(root / "student", tmp_path) as (url, key, model):
        tops = LogprobsApi(url, model.model, key, tok, k=20).text_topk(plain)
    ours, positions = topk_weights(tops, 1)
    base, _ = read_distributions(teacher, [], tok, 1, top_k=20, positions_of=positions)
    keys = [WatermarkKey(np.random.default_rng(i).bytes(32), context_width=1) for i in range(150)]
    for rows, c in (combine(ours, None), combine(ours, base)):
        p = np.array([score(c, green_bits(GreenList(k), rows), k.gamma).p_value for k in keys])
        assert stats.kstest(p, "uniform").pvalue > 0.001, np.sort(p)[:10]
        assert np.mean(p <= 0.01) <= 0.05
