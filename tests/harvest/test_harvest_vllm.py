"""Harvesting a real vLLM server (scripts/start-vllm, Gemma 3 270M) with token ids: the store
keeps ids as for a local teacher, so a student of the same tokenizer trains on the top-k."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stillroom.config import validate_config
from stillroom.harvest.runner import harvest
from stillroom.harvest.signals import decode_topk
from stillroom.teachers.local import LocalTeacher
from stillroom.train.trainer import train

pytestmark = pytest.mark.integration

QUESTIONS = ["What is a volcano?", "Why do owls hunt at night?", "What makes tides?",
             "How do bees make honey?", "What is a glacier?", "Why is the sky blue?"]  # fmt: skip


def _config(tmp_path: Path, url: str, endpoint: str) -> Any:
    prompts = tmp_path / "q.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "q": q}) + "\n" for i, q in enumerate(QUESTIONS))
    )
    from stillroom.runtime.gemma import default_teacher_dir

    return validate_config(
        {
            "name": f"vllm-{endpoint}",
            "runs_dir": str(tmp_path / "runs"),
            "prompts": {"path": str(prompts), "template": "Question: {q}\nAnswer:",
                        "id_field": "id"},
            "teacher": {"kind": "api", "model": "gemma-3-270m", "base_url": url,
                        "endpoint": endpoint, "token_ids": True,
                        "api_key_env": "STILLROOM_NO_KEY"},
            "generation": {"max_tokens": 12, "temperature": 1.0, "seed": 0, "top_logprobs": 20},
            "split": {"train": 0.67, "validation": 0.33, "test": 0.0},
            "train": {
                "objective": "logits",
                "student": {"init": "shrink", "path": str(default_teacher_dir()),
                            "keep_every": 17, "trim_vocab": True},
                "max_steps": 2, "batch_tokens": 512, "eval_every": 2, "checkpoint_every": 0,
                "early_stopping_patience": None, "threads": 1,
            },
        },
        "test",
    )  # fmt: skip


def test_a_vllm_harvest_with_token_ids_stores_ids_and_trains_logit_kd(
    vllm_url: str, tmp_path: Path
) -> None:
    cfg = _config(tmp_path, vllm_url, "completions")
    assert harvest(cfg, show_progress=False).ok == len(QUESTIONS)
    local = LocalTeacher.load("gemma-3-270m", dtype="bfloat16")
    with sqlite3.connect(cfg.run_dir / "harvest.sqlite") as db:
        rows = db.execute(
            "SELECT c.request, c.prompt_ids, p.token_ids, p.tokens, p.topk, p.text"
            " FROM calls c JOIN completions p ON p.call_key = c.key"
        ).fetchall()
    for request, prompt_ids, token_ids, tokens, topk, text in rows:
        prompt = json.loads(request)["prompt"]
        assert np.frombuffer(prompt_ids, "<i4").tolist() == local.tokenizer(prompt)["input_ids"]
        ids = np.frombuffer(token_ids, "<i4").tolist()
        assert tokens is None and local.tokenizer.decode(ids, skip_special_tokens=True) == text
        sig = decode_topk(topk)
        # vLLM adds the sampled token to its top 20 when it is not among them.
        assert len(ids) == sig.T and sig.k in (20, 21)
        assert (sig.ids[:, :20] >= 0).all() and sig.ids.max() < local.runtime.vocab_size
    result = train(cfg, quiet=True)
    assert result.best_val is not None and "val_kl" in result.best_val
