"""Ordinary API customers: chat users, developers, enterprise batch pipelines, evaluators."""

from __future__ import annotations

import random

import numpy as np

from stillroom.audit.traffic import (
    BENCHMARKS,
    CHAT_FRAMES,
    CHAT_PREFIX,
    CHAT_SUFFIX,
    DEV_FRAMES,
    ENTERPRISE_TEMPLATES,
    FOLLOWUPS,
    ITEMS_PER_BENCH,
    TOPIC_NAMES,
    Persona,
    Req,
    bench_item,
    burst_times,
    diurnal_times,
    filler_doc,
    human_sessions,
    pick_words,
    sample_status,
    sampling_params,
    scaled_count,
    token_count,
)

PERSONA_MIX = {"chat_user": 0.55, "developer": 0.25, "enterprise_batch": 0.10, "evaluator": 0.10}

# --- personas ------------------------------------------------------------------------------


def chat_user(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = scaled_count(p, np.clip(r.lognormvariate(3.6, 1.0), 3, 1500))
    topics = r.sample(TOPIC_NAMES, r.randint(2, 4))
    temp = r.choice((None, None, 0.7, 1.0))
    cap = r.choice((None, None, 512, 1024))
    stream = r.random() < 0.7
    times = human_sessions(g, n, days, r.uniform(-8, 9), 3.0)
    reqs = []
    for _ in range(n):
        t = r.choice(topics)
        a, b = pick_words(r, t, 2)
        hist = 0 if r.random() < 0.45 else r.randint(1, 4)
        text = (r.choice(FOLLOWUPS) if hist else r.choice(CHAT_FRAMES)).format(a=a, b=b)
        text = r.choice(CHAT_PREFIX) + text + r.choice(CHAT_SUFFIX)
        reqs.append(
            Req(
                text,
                sampling_params(1, temp, cap, 0, stream),
                token_count(r, 5.3, 0.6, cap),
                history=hist,
                status=sample_status(r, 0.002),
            )
        )
    return times, reqs


def developer(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = scaled_count(p, np.clip(r.lognormvariate(5.0, 1.1), 5, 20000))
    return human_sessions(g, n, days, r.uniform(-8, 9), 6.0), _dev_reqs(p, n)


def _dev_reqs(p: Persona, n: int) -> list[Req]:
    r = p.rng
    topics = ["programming", *r.sample(TOPIC_NAMES, r.randint(1, 3))]
    app = f"You are the assistant inside {p.extra.get('org', 'acme')}'s {r.choice(topics)} app."
    tests_logprobs = r.random() < 0.3
    multi_n = r.random() < 0.15
    reqs = []
    for _ in range(n):
        t = r.choice(topics)
        a, b = pick_words(r, t, 2)
        if r.random() < 0.5:
            text, system = r.choice(DEV_FRAMES).format(a=a, b=b, n=r.randint(1, 999)), None
        else:
            text, system = r.choice(CHAT_FRAMES).format(a=a, b=b), app
        cap = r.choice((None, 256, 1024, 4096))
        lp = r.randint(1, 5) if tests_logprobs and r.random() < 0.3 else 0
        nn = r.randint(2, 5) if multi_n and r.random() < 0.2 else 1
        temp = r.choice((None, 0.0, 0.2, 0.7, 1.0))
        reqs.append(
            Req(
                text,
                sampling_params(nn, temp, cap, lp, r.random() < 0.3),
                token_count(r, 5.0, 0.9, cap),
                system=system,
                history=0 if r.random() < 0.7 else r.randint(1, 3),
                status=sample_status(r, 0.005),
            )
        )
    return reqs


def enterprise_batch(
    p: Persona, g: np.random.Generator, days: float
) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    n = scaled_count(p, np.clip(r.lognormvariate(8.6, 0.9), 800, 120000))
    kind = p.extra.get("template", r.randrange(len(ENTERPRISE_TEMPLATES)))
    system, frame = ENTERPRISE_TEMPLATES[kind]
    system = system.format(org=p.extra.get("org", "Acme"))
    topics = r.sample(TOPIC_NAMES, r.randint(1, 2))
    doc_len, out_mu, cap = [
        (30, 0.5, 5),
        (250, 4.6, 300),
        (60, 3.9, 200),
        (40, 0.3, 3),
        (80, 4.6, 400),
    ][kind]
    lp = r.randint(1, 5) if r.random() < 0.3 and kind in (0, 3) else 0
    nn = 3 if r.random() < 0.1 else 1
    if r.random() < 0.5:
        times = burst_times(g, n, days, int(days), r.uniform(2, 10), 0.3, hours=(0.5, 3.5))
    else:
        times = diurnal_times(g, n, days, r.uniform(-8, 9), r.uniform(0.2, 0.7))
    reqs = []
    for _ in range(n):
        text = frame.format(doc=filler_doc(r, topics, max(5, int(r.gauss(doc_len, doc_len / 3)))))
        reqs.append(
            Req(
                text,
                sampling_params(nn, 0.0, cap, lp),
                token_count(r, out_mu, 0.4, cap),
                system=system,
                status=sample_status(r, 0.01),
            )
        )
    return times, reqs


def evaluator(p: Persona, g: np.random.Generator, days: float) -> tuple[np.ndarray, list[Req]]:
    r = p.rng
    runs = r.randint(1, 6)
    reqs: list[Req] = []
    sizes = []
    for _ in range(runs):
        for bench in r.sample(BENCHMARKS, r.randint(1, 3)):
            total = ITEMS_PER_BENCH[bench]
            items = range(scaled_count(p, min(total, r.choice((total, total, 500)))))
            sizes.append(len(items))
            for i in items:
                reqs.append(_bench_req(r, bench, i))
    times = burst_times(g, len(reqs), days, len(sizes), r.uniform(3, 15), 0.4)
    return times, reqs  # runs are contiguous in `reqs`, and times are sorted: runs stay whole


def _bench_req(r: random.Random, bench: str, i: int) -> Req:
    text, _ = bench_item(bench, i)
    if bench == "mcq":
        return Req(text, sampling_params(1, 0.0, 1, 5, chat=False), 1, endpoint="completions")
    if bench == "math_cot":
        return Req(text, sampling_params(1, 0.0, 512), token_count(r, 5.3, 0.3, 512))
    if bench == "code":
        return Req(
            text,
            sampling_params(r.choice((10, 20)), 0.8, 512, top_p=0.95, chat=False),
            token_count(r, 4.8, 0.4, 512),
            endpoint="completions",
        )
    return Req(text, sampling_params(1, 0.7, 1024), token_count(r, 5.9, 0.4, 1024))
