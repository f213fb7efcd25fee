"""The watermark as a vLLM logits processor (stillroom/watermark/vllm_plugin.py), read by our
own detector: a real vLLM server serving Gemma 3 270M with the plugin loaded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from stillroom.watermark.detect import detect_texts
from stillroom.watermark.key import load_key

pytestmark = pytest.mark.integration

PROMPTS = [
    "Write a story about a dragon who learns to bake bread.",
    "Describe a walk through a busy market in the morning.",
    "Explain how a bicycle works to a curious child.",
    "Write a letter to a friend about a trip to the sea.",
    "Tell the history of a small village by a river.",
    "Describe the life of a bee through one summer day.",
]


def _answers(url: str, key_id: str, seed: int = 0) -> list[str]:
    def one(i: int) -> Any:
        body = {"model": "gemma-3-270m", "prompt": PROMPTS[i], "max_tokens": 200,
                "min_tokens": 200, "temperature": 1.0, "seed": seed + i,
                "vllm_xargs": {"watermark_key_id": key_id}}  # fmt: skip
        reply = httpx.post(f"{url}/completions", json=body, timeout=600)
        assert reply.status_code == 200, reply.text
        return reply.json()["choices"][0]["text"]

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(one, range(len(PROMPTS))))


def test_vllm_answers_carry_the_key_and_unmarked_ones_do_not(
    vllm_url: str, vllm_watermark_key: str
) -> None:
    key = load_key(vllm_watermark_key)
    marked = detect_texts(_answers(vllm_url, key.key_id), key)
    plain = detect_texts(_answers(vllm_url, "none"), key)
    # Every answer runs to 200 tokens (min_tokens); repeated context pairs are scored once,
    # so a repetitive answer scores fewer: those with 100 or more must all be detected.
    scored = [d for d in marked if d.tokens_scored >= 100]
    assert len(scored) >= len(PROMPTS) // 2 and all(d.z > 4 for d in scored), [
        (d.tokens_scored, d.z) for d in marked
    ]
    assert all(d.p_value > 1e-3 for d in plain), [d.p_value for d in plain]


def test_an_unknown_key_id_is_refused_with_400(vllm_url: str, vllm_watermark_key: str) -> None:
    body = {"model": "gemma-3-270m", "prompt": "hi", "max_tokens": 2,
            "vllm_xargs": {"watermark_key_id": "not-a-key"}}  # fmt: skip
    reply = httpx.post(f"{vllm_url}/completions", json=body, timeout=60)
    assert reply.status_code == 400 and "watermark_key_id" in reply.text
