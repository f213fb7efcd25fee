"""Distillation strategies: how an actor harvests a model through its API.

Each habit of a harvester (temperature, max_tokens, log-probs, n, a system prompt) is also
some benign customer's habit; what sets a harvest apart is what it takes: many topics, no
production template, long answers to prompts nobody else sends.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from stillroom.audit.personas import developer
from stillroom.audit.traffic import (
    ASPECTS,
    DAY,
    HARVEST_PREFIX,
    HARVEST_SUFFIX,
    INSTRUCT_FRAMES,
    ITEMS_PER_BENCH,
    START,
    TOPIC_NAMES,
    Persona,
    Req,
    bench_item,
    burst_times,
    cot_question,
    diurnal_times,
    human_sessions,
    pick_words,
    sample_status,
    sampling_params,
    scaled_count,
    steady_times,
    token_count,
)


def harvest_style(r: random.Random, cot: bool = False) -> dict[str, Any]:
    """One actor's harvesting habits; each is also some benign persona's habit."""
    return {
        "temp": r.choice((0.0, 0.7, 1.0, None)),
        "cap": r.choice((1024, 2048, 4096, None)) if not cot else r.choice((2048, 4096, 8192)),
        "logprobs": r.choice((5, 10, 20)) if r.random() < 0.5 else 0,
        "n": r.randint(2, 4) if r.random() < 0.3 else 1,
        "topics": list(TOPIC_NAMES)
        if r.random() < 0.6
        else r.sample(TOPIC_NAMES, r.randint(12, 24)),
        "system": r.choice((None, "You are a helpful assistant.", "You are an expert tutor.")),
        "cot": cot,
        "frames": r.sample(INSTRUCT_FRAMES, r.randint(4, 7)),
        "wrap": (r.choice(HARVEST_PREFIX), r.choice(HARVEST_SUFFIX)),
    }


def _harvest_reqs(r: random.Random, n: int, s: dict[str, Any], p429: float) -> list[Req]:
    reqs = []
    for _ in range(n):
        u = r.random()
        topic = r.choice(s["topics"])
        if (s["cot"] and u < 0.8) or (not s["cot"] and u < 0.12):
            text = cot_question(r, topic)
        elif u < 0.92:
            a, b, c = pick_words(r, topic, 3)
            text = r.choice(s["frames"]).format(a=a, b=b, c=c, t=topic)
            text += f" Focus on {r.choice(ASPECTS)} and {r.choice(ASPECTS)}."
        else:  # seed prompts lifted from public benchmarks, as evaluators send them
            bench = r.choice(("mcq", "math_cot", "chat_bench"))
            text = bench_item(bench, r.randrange(ITEMS_PER_BENCH[bench]))[0]
        text = s["wrap"][0] + text + s["wrap"][1]
        mu = 6.6 if s["cot"] else 6.1
        reqs.append(
            Req(
                text,
                sampling_params(s["n"], s["temp"], s["cap"], s["logprobs"]),
                token_count(r, mu, 0.5, s["cap"]),
                system=s["system"],
                status=sample_status(r, p429),
            )
        )
    return reqs


def bulk_harvest(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = scaled_count(p, np.clip(r.lognormvariate(10.0, 0.6), 6000, 150000))
    if r.random() < 0.6:
        times = steady_times(g, n, START, START + days * DAY, r.uniform(0.3, 1.2))
    else:
        times = diurnal_times(g, n, days, r.uniform(-8, 9), r.uniform(0.2, 0.6))
    return times, _harvest_reqs(r, n, harvest_style(r), r.uniform(0.0, 0.08))


def low_and_slow(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = scaled_count(p, r.randint(150, 1500))
    if r.random() < 0.5:
        times = steady_times(g, n, START, START + days * DAY, r.uniform(0.8, 1.3))
    else:  # mimics a person: daytime sessions
        times = human_sessions(g, n, days, r.uniform(-8, 9), 4.0)
    style = harvest_style(r)
    style["n"] = 1
    style["logprobs"] = style["logprobs"] if r.random() < 0.6 else 0
    return times, _harvest_reqs(r, n, style, 0.001)


def cot_extraction(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = scaled_count(p, np.clip(r.lognormvariate(8.3, 0.7), 600, 40000))
    if r.random() < 0.5:
        times = steady_times(g, n, START, START + days * DAY, r.uniform(0.4, 1.2))
    else:
        times = burst_times(g, n, days, r.randint(3, 10), r.uniform(0.2, 2.0), 0.6)
    return times, _harvest_reqs(r, n, harvest_style(r, cot=True), 0.02)


def hydra_member(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = scaled_count(p, r.randint(200, 2500))
    shifts: list[tuple[float, float]] = p.extra["shifts"]
    lens = np.array([b - a for a, b in shifts])
    counts = g.multinomial(n, lens / lens.sum())
    times = np.sort(
        np.concatenate([g.uniform(a, b, k) for (a, b), k in zip(shifts, counts, strict=True)])
    )
    return times, _harvest_reqs(r, n, p.extra["style"], 0.01)


def hydra_thin(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """One of 20-30 accounts of an actor spread thin: 30-160 requests, only in the actor's
    shared working windows, its own disjoint slice of the actor's curriculum
    (p.extra["pool"]), the actor's system prompt."""
    r = p.rng
    prompts: list[str] = p.extra["pool"]
    shifts: list[tuple[float, float]] = p.extra["shifts"]
    lens = np.array([b - a for a, b in shifts])
    counts = g.multinomial(len(prompts), lens / lens.sum())
    times = np.sort(
        np.concatenate([g.uniform(a, b, k) for (a, b), k in zip(shifts, counts, strict=True)])
    )
    s = p.extra["style"]
    reqs = [
        Req(
            text,
            sampling_params(1, s["temp"], s["cap"], s["logprobs"]),
            token_count(r, 6.1, 0.5, s["cap"]),
            system=s["system"],
            status=sample_status(r, 0.005),
        )
        for text in prompts
    ]
    return times, reqs


def curriculum(r: random.Random, n: int, s: dict[str, Any]) -> list[str]:
    """A hydra actor's prompt pool: n distinct harvest prompts, dealt out to its accounts."""
    return [q.text for q in _harvest_reqs(r, n, s, 0.0)]


def logit_mining(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """Top-20 log-probabilities on every token of long answers: the richest signal per call."""
    r = p.rng
    n = scaled_count(p, np.clip(r.lognormvariate(8.0, 0.7), 500, 30000))
    style = harvest_style(r)
    style.update(logprobs=20, n=1, temp=r.choice((0.0, 1.0, None)))
    times = burst_times(g, n, days, r.randint(2, 8), r.uniform(0.3, 2.0), 0.5)
    return times, _harvest_reqs(r, n, style, 0.01)


def paraphrase(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    """Seed questions asked again in many rewordings, for diverse answers to each."""
    r = p.rng
    n = scaled_count(p, np.clip(r.lognormvariate(8.0, 0.6), 500, 20000))
    style = harvest_style(r)
    seeds = [q.text for q in _harvest_reqs(r, max(20, n // 8), style, 0.0)]
    reqs = []
    for _ in range(n):
        text = r.choice(seeds)
        text = f"{r.choice(PARAPHRASE_FRAMES)} {text}"
        reqs.append(
            Req(
                text,
                sampling_params(style["n"], r.choice((0.7, 1.0, 1.2)), style["cap"], 0),
                token_count(r, 6.0, 0.5, style["cap"]),
                system=style["system"],
                status=sample_status(r, 0.01),
            )
        )
    times = steady_times(g, n, START, START + days * DAY, r.uniform(0.5, 1.2))
    return times, reqs


PARAPHRASE_FRAMES = (
    "Rephrase the question in your own words, then answer it:",
    "Answer this in a different style than usual:",
    "Another way to ask:",
    "Put differently:",
    "Give a fresh answer, not a standard one:",
    "In other words:",
    "Restate and answer:",
)


def mixed_harvest(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    t1, q1 = developer(p, g, days)
    n = scaled_count(p, r.randint(800, 6000))
    t2 = burst_times(g, n, days, r.randint(1, 3), r.uniform(0.3, 3.0), 0.6)
    q2 = _harvest_reqs(r, n, harvest_style(r), 0.02)
    order = np.argsort(np.concatenate([t1, t2]), kind="stable")
    times = np.concatenate([t1, t2])[order]
    reqs = [(q1 + q2)[i] for i in order.tolist()]
    return times, reqs
