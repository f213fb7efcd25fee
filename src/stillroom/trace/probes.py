"""Identity probes: ask the suspect who made it, in several phrasings, and report its claims.

A distilled model often repeats its teacher's self-description ("I am Gemma, made by
Google"). What a model says about itself is evidence to weigh, never proof: it can be
prompted, fine-tuned or filtered to say anything.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

PROBES = (
    "Who created you?",
    "What is your name, and which company trained you?",
    "Which language model are you? Answer in one sentence.",
    "Tell me about yourself: who built you and what model family are you from?",
    "Are you based on Gemma, Llama, Qwen, Mistral, GPT or Claude? Answer honestly.",
)

# Names a self-description may mention, grouped by maker.
NAMES = {
    "Google": ("google", "gemma", "gemini", "deepmind", "bard"),
    "Meta": ("meta", "llama", "facebook"),
    "OpenAI": ("openai", "gpt", "chatgpt"),
    "Anthropic": ("anthropic", "claude"),
    "Alibaba": ("alibaba", "qwen"),
    "Mistral": ("mistral", "mixtral"),
    "DeepSeek": ("deepseek",),
    "Microsoft": ("microsoft", "phi"),
}


@dataclass
class ProbeResult:
    answers: list[dict[str, Any]]  # {probe, answer, makers}
    claims: dict[str, int]  # maker -> how many answers name it


def makers_named(text: str) -> list[str]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return [maker for maker, names in NAMES.items() if words & set(names)]


def identity_probes(suspect: Any, *, max_tokens: int = 64, seed: int = 0) -> ProbeResult:
    texts = suspect.answer(list(PROBES), max_tokens=max_tokens, temperature=0.0, seed=seed)
    answers = [
        {"probe": p, "answer": t, "makers": makers_named(t)}
        for p, t in zip(PROBES, texts, strict=True)
    ]
    # The last probe lists names itself: an answer echoing them all claims nothing.
    counted = Counter(m for a in answers[:-1] for m in a["makers"])
    counted.update(m for m in answers[-1]["makers"] if len(answers[-1]["makers"]) <= 2)
    return ProbeResult(answers, dict(counted))
