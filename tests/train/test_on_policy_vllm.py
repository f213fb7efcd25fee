"""On-policy scoring against a real vLLM server serving Gemma 3 270M (scripts/start-vllm):
the teacher's top-k on a student's tokens, read through vLLM as through the local teacher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stillroom.config import validate_config
from stillroom.harvest.runner import harvest
from stillroom.teacher_config import ApiTeacherConfig
from stillroom.teachers.local import LocalTeacher
from stillroom.train.teacher_scores import LocalScorer, make_scorer
from stillroom.train.trainer import train

pytestmark = pytest.mark.integration

TEXTS = [
    "Question: What is a volcano?\nAnswer: A volcano is a mountain that erupts lava and ash.",
    "Write one sentence about owls.\nOwls hunt at night and see very well in the dark.",
    "Explain tides to a child.\nExplanation: The moon pulls the sea, so it rises and falls.",
]


def test_vllm_scores_a_sequence_as_the_local_teacher_does(vllm_url: str) -> None:
    served = make_scorer(ApiTeacherConfig(model="gemma-3-270m", base_url=vllm_url))
    local = LocalScorer(LocalTeacher.load("gemma-3-270m", dtype="bfloat16"))
    seqs = [local.teacher.tokenizer(t)["input_ids"] for t in TEXTS]
    starts = [8] * len(seqs)
    for a, b in zip(served.score(seqs, starts, 20), local.score(seqs, starts, 20), strict=True):
        assert a.ids.shape == b.ids.shape == (len(a.ids), 20)
        # Both run the model in bfloat16, with different kernels: near-ties may swap, so
        # vLLM's top token is among the local top two everywhere, and the top log-prob
        # differs by 0.08 nat on average (bfloat16 rounding; measured 0.02-0.05).
        assert all(a.ids[t, 0] in b.ids[t, :2] for t in range(len(a.ids)))
        assert (a.ids[:, 0] == b.ids[:, 0]).mean() >= 0.85
        gap = np.abs(a.logprobs[:, 0] - b.logprobs[:, 0])
        assert gap.mean() < 0.08 and gap.max() < 0.3


def test_on_policy_training_against_vllm_pays_each_call_once(vllm_url: str, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    with prompts.open("w") as f:
        for i, t in enumerate(TEXTS * 4):
            f.write(json.dumps({"id": f"p{i}", "text": t.split("\n")[0] + f" ({i})\n"}) + "\n")
    raw: dict[str, Any] = {
        "name": "op-vllm",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {"path": str(prompts), "field": "text", "id_field": "id"},
        "teacher": {"kind": "api", "model": "gemma-3-270m", "base_url": vllm_url,
                    "endpoint": "completions", "api_key_env": "STILLROOM_NO_KEY"},
        "generation": {"max_tokens": 8, "temperature": 1.0, "seed": 0},
        "split": {"train": 0.75, "validation": 0.25, "test": 0.0},
        "train": {
            "objective": "on_policy", "divergence": "reverse_kl",
            "on_policy": {"max_new_tokens": 8},
            "student": {"init": "shrink", "path": str(_gemma()), "keep_every": 17,
                        "trim_vocab": False},
            "max_steps": 2, "batch_tokens": 512, "eval_every": 0, "checkpoint_every": 0,
            "early_stopping_patience": None, "threads": 1,
        },
    }  # fmt: skip
    cfg = validate_config(raw, "test")
    assert harvest(cfg, show_progress=False).ok == len(TEXTS * 4)
    first = train(cfg, quiet=True)
    assert first.on_policy is not None and first.on_policy["scoring_calls_paid"] > 0
    again = train(cfg, quiet=True)  # the same steps, seeds and student: nothing new to pay
    assert again.on_policy is not None and again.on_policy["scoring_calls_paid"] == 0
    assert (
        again.on_policy["scoring_calls_reused"]
        == first.on_policy["scoring_calls_paid"] + (first.on_policy["scoring_calls_reused"])
    )


def _gemma() -> Path:
    from stillroom.runtime.gemma import default_teacher_dir

    return default_teacher_dir()
