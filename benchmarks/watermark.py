"""The watermark on the real teacher (Gemma 3 270M): detection power, false positives, quality.

Prints one JSON object. Everything is measured in one run, side by side with its baseline:
the same model (weights shared), the same prompts and per-request seeds, with and without
the watermark key (gamma 0.25, delta 2, context width 2, a fixed benchmark key).

- **Power.** `--outputs` chat answers (the 24 questions of examples/prompts/questions.jsonl,
  then WordNet noun glosses as "write about" requests), sampled at temperature 1 with
  max_tokens 200. Each is scored from its *text* (decoded, re-encoded by the tokenizer: what
  a detector sees) and from the sampled ids. Answers that ended before 200 tokens are kept
  and reported apart, never dropped.
- **False positives.** Real text this project did not write: every WordNet 3.0 gloss
  (noun, verb, adjective, adverb; Debian's wordnet-base) in file order, joined into texts of
  about 200 tokens, scored against the benchmark key and `--fp-keys - 1` more random keys; plus
  the unwatermarked Gemma answers. The exact binomial test's own false-positive rate at each
  text's length is printed beside the observed one: the test is discrete, so it is below the
  nominal 1e-3. Pooled over keys the observed rate matches it; for one fixed key it spreads
  more than chance would (texts share frequent pairs such as "of the", whose greenness the
  key fixes for every text), most at small context widths, hence the per-key counts.
- **Quality.** (a) The WordNet category task answered by generation: greedy first token after
  the few-shot prompt (`stillroom.tasks.wordnet.prompt_for`; every label is one token, so the
  first token is the answer), with and without the bias. The prompt's shared prefix runs once
  (KV reuse); a few items are checked against `LocalTeacher.generate(max_tokens=1)`. Every
  item's first token has the same context (the prompt's last tokens), so the bias lifts the
  same labels for every item; the spread over `--quality-keys` random keys shows how much that
  depends on the key. (b) Perplexity under the unwatermarked model of the watermarked and the
  unwatermarked answers to the same `--baseline-outputs` prompts.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/watermark.py [--outputs 208] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from stillroom.runtime.gemma import DEFAULT_TEACHER
from stillroom.runtime.scoring import prefix_cache
from stillroom.runtime.tensors import pad_batch
from stillroom.tasks.wordnet import (
    CANDIDATES,
    LABELS,
    build_wordnet_task,
    find_wordnet,
    parse_data_noun,
    prompt_for,
)
from stillroom.teachers.base import Choice, GenerationParams, TeacherRequest
from stillroom.teachers.local import LocalTeacher
from stillroom.watermark.detect import Detection, detect_many, detect_texts
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey
from stillroom.watermark.processor import WatermarkProcessor

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "examples" / "prompts" / "questions.jsonl"
MAX_TOKENS = 200
ALPHA = 1e-3  # the false-positive threshold the figures are about
Z_MIN = 4.0


def log(message: str) -> None:
    print(f"[watermark bench] {message}", file=sys.stderr, flush=True)


def bench_key(seed: int, context_width: int = 1) -> WatermarkKey:
    secret = np.random.default_rng(seed).bytes(32)
    return WatermarkKey(secret, gamma=0.25, delta=2.0, context_width=context_width)


# ---- prompts and real text ----------------------------------------------------------------


def chat_prompts(n: int, seed: int) -> list[str]:
    """The project's questions first, then "write about" requests on random noun glosses."""
    prompts = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    synsets = [
        s
        for s in parse_data_noun(find_wordnet())
        if not s.instance and not s.taxon and 4 <= len(s.definition.split()) <= 25
    ]
    for s in random.Random(seed).sample(synsets, max(0, n - len(prompts))):
        word = s.words[0].replace("_", " ")
        prompts.append(f"Write a detailed paragraph about {word} ({s.definition}).")
    return prompts[:n]


def wordnet_glosses() -> list[str]:
    """Every gloss of WordNet 3.0 (definition and examples), in file order."""
    base = find_wordnet().parent
    glosses = []
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        with (base / name).open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("  ") and " | " in line:  # license lines: 2 spaces
                    glosses.append(line.partition(" | ")[2].strip())
    return glosses


def join_to_length(texts: list[str], tokenizer: Any, tokens: int) -> list[str]:
    """Consecutive texts joined with spaces into pieces of about `tokens` tokens each."""
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    out, piece, size = [], [], 0
    for text, n in zip(texts, lengths, strict=True):
        piece.append(text)
        size += n
        if size >= tokens:
            out.append(" ".join(piece))
            piece, size = [], 0
    return out


# ---- generation ---------------------------------------------------------------------------


def generate(teacher: LocalTeacher, prompts: list[str]) -> tuple[list[Choice], float]:
    params = GenerationParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=0)
    requests = [TeacherRequest(messages=(("user", p),), params=params) for p in prompts]
    start = time.perf_counter()
    out = []
    for i in range(0, len(requests), teacher.batch_size):  # a log line per batch
        out += teacher.generate(requests[i : i + teacher.batch_size])
        log(f"  {len(out)}/{len(requests)} answers, {time.perf_counter() - start:.0f} s")
    return [c.choices[0] for c in out], time.perf_counter() - start


def power(found: list[Detection], lengths: list[int], texts: list[str] | None) -> dict[str, Any]:
    """Detection figures over every answer; with `texts`, each miss and early end itemised."""
    z = np.array([d.z for d in found])
    scored = np.array([d.tokens_scored for d in found])
    full = np.array(lengths) >= MAX_TOKENS
    out: dict[str, Any] = {
        "n": len(found),
        f"fraction_z_above_{Z_MIN:g}": round(float(np.mean(z > Z_MIN)), 4),
        f"fraction_z_above_{Z_MIN:g}_full_length_only": round(float(np.mean(z[full] > Z_MIN)), 4)
        if full.any()
        else None,
        "fraction_p_below_1e-3": round(float(np.mean([d.p_value < ALPHA for d in found])), 4),
        "z_min": round(float(z.min()), 2),
        "z_median": round(float(np.median(z)), 2),
        "z_max": round(float(z.max()), 2),
        "tokens_scored_min": int(scored.min()),
        "tokens_scored_median": float(np.median(scored)),
        "reached_max_tokens": int(full.sum()),
        "ended_early": int((~full).sum()),
        "ended_early_z_above_4": int((z[~full] > Z_MIN).sum()),
    }
    if texts is not None:

        def item(i: int) -> dict[str, Any]:
            return {
                "tokens": lengths[i],
                "tokens_scored": int(scored[i]),
                "z": round(float(z[i]), 2),
                "text_start": texts[i][:90],
            }

        out[f"z_at_most_{Z_MIN:g}"] = [item(int(i)) for i in np.flatnonzero(z <= Z_MIN)]
        out["ended_early_items"] = [
            {k: v for k, v in item(int(i)).items() if k != "text_start"}
            for i in np.flatnonzero(~full)
        ]
    return out


def repetitive(found: list[Detection]) -> int:
    """Answers with fewer distinct (previous, next) token pairs than half their tokens: loops."""
    return sum(d.tokens_scored < d.tokens / 2 for d in found)


# ---- false positives ----------------------------------------------------------------------


def exact_size(n: np.ndarray, gamma: float) -> np.ndarray:
    """P(p-value < ALPHA) under H0 for n scored tokens: the exact test's real false-alarm rate."""
    k = np.arange(int(n.max()) + 2)
    out = np.zeros(len(n))
    for m in np.unique(n):
        if m == 0:
            continue
        p = stats.binom.sf(k[: m + 1] - 1, m, gamma)  # p-value of each green count
        first = int(np.argmax(p < ALPHA)) if (p < ALPHA).any() else m + 1
        out[n == m] = stats.binom.sf(first - 1, m, gamma)
    return out


def false_positives(token_lists: list[list[int]], keys: list[WatermarkKey]) -> dict[str, Any]:
    per_key: list[dict[str, Any]] = []
    for key in keys:
        found = detect_many(token_lists, GreenList(key))
        p = np.array([d.p_value for d in found])
        n = np.array([d.tokens_scored for d in found])
        per_key.append(
            {
                "key_id": key.key_id,
                "texts_p_below_1e-3": int((p < ALPHA).sum()),
                "fraction": float((p < ALPHA).mean()),
                "exact_test_expected_fraction": float(exact_size(n, key.gamma).mean()),
                "max_z": round(float(max(d.z for d in found)), 2),
                "min_p": float(p.min()),
            }
        )
    n_all = len(token_lists) * len(keys)
    hits = sum(int(k["texts_p_below_1e-3"]) for k in per_key)
    return {
        "texts": len(token_lists),
        "tokens_scored_median": float(
            np.median([d.tokens_scored for d in detect_many(token_lists, GreenList(keys[0]))])
        ),
        "benchmark_key": per_key[0],
        "all_keys": {
            "keys": len(keys),
            "text_key_pairs": n_all,
            "p_below_1e-3": hits,
            "fraction": hits / n_all,
            "exact_test_expected_fraction": float(
                np.mean([k["exact_test_expected_fraction"] for k in per_key])
            ),
            "per_key_counts": [k["texts_p_below_1e-3"] for k in per_key],
            "keys_above_1e-3": sum(k["fraction"] > ALPHA for k in per_key),
            "max_fraction": max(k["fraction"] for k in per_key),
        },
    }


# ---- quality ------------------------------------------------------------------------------


def first_token_logits(teacher: LocalTeacher, prompts: list[str]) -> torch.Tensor:
    """(N, V) next-token logits after each prompt: shared few-shot prefix run once (KV reuse)."""
    model = teacher.runtime
    encoded = [list(teacher.tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    out = []
    with model.lock, torch.inference_mode():
        for i in range(0, len(encoded), teacher.batch_size):
            chunk = encoded[i : i + teacher.batch_size]
            n_prefix, cache = prefix_cache(model, chunk)
            ids, suffix_mask = pad_batch(
                [t[n_prefix:] for t in chunk], model.pad_token_id, model.device
            )
            mask = torch.cat([suffix_mask.new_ones(len(chunk), n_prefix), suffix_mask], dim=1)
            positions = n_prefix + torch.arange(ids.shape[1]).expand(len(chunk), -1)
            hidden = model.hidden(ids, mask, positions, cache)  # (P, S, H)
            last = suffix_mask.sum(1) - 1
            out.append(model.head(hidden[torch.arange(len(chunk)), last]))  # (P, V)
    return torch.cat(out)


def category_task(
    teacher: LocalTeacher, key: WatermarkKey, per_class: int, extra_keys: int, seed: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = build_wordnet_task(Path(tmp), per_class=per_class, seed=seed)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    prompts = [prompt_for(r["text"]) for r in rows]
    label_ids = [teacher._encode_candidate(c)[0] for c in CANDIDATES]
    gold = torch.tensor([label_ids[LABELS.index(r["label"])] for r in rows])
    # Every prompt ends "...\nCategory:", so every item's first token has the same context.
    context = teacher._encode_text(prompts[0], special=True)[-key.context_width :]
    start = time.perf_counter()
    logits = first_token_logits(teacher, prompts)  # (N, V)
    seconds = time.perf_counter() - start

    def answers(k: WatermarkKey | None) -> torch.Tensor:  # (N,) greedy first token ids
        if k is None:
            return logits.argmax(dim=1)
        mask = GreenList(k).green_mask(torch.tensor([context]), logits.shape[1])  # (1, V)
        mask[:, sorted(teacher.eos_token_ids)] = False  # as LocalTeacher: EOS is never biased
        return (logits + k.delta * mask).argmax(dim=1)

    def accuracy(k: WatermarkKey | None) -> float:
        return float((answers(k) == gold).float().mean())

    # The shortcut must answer as LocalTeacher.generate does: check a few items both ways.
    marked = LocalTeacher(teacher.lm, teacher.tokenizer, name=teacher.model, watermark=key)
    check = [TeacherRequest(prompt=p, params=GenerationParams(max_tokens=1)) for p in prompts[:4]]
    agree = [
        [(c.choices[0].token_ids or [-1])[0] for c in runner.generate(check)]
        == answers(k)[:4].tolist()
        for runner, k in ((teacher, None), (marked, key))
    ]
    green_now = GreenList(key).green_mask(torch.tensor([context]), logits.shape[1])[0]
    rng = np.random.default_rng(seed + 1)
    others = [
        accuracy(WatermarkKey(rng.bytes(32), context_width=key.context_width))
        for _ in range(extra_keys)
    ]
    return {
        "task": "WordNet noun gloss -> category (8 classes), greedy first generated token",
        "items": len(rows),
        "accuracy_without_watermark": round(accuracy(None), 4),
        "accuracy_with_watermark": round(accuracy(key), 4),
        "green_labels_under_benchmark_key": [
            label for label, t in zip(LABELS, label_ids, strict=True) if bool(green_now[t])
        ],
        "accuracy_with_watermark_other_keys": {
            "keys": extra_keys,
            "mean": round(float(np.mean(others)), 4),
            "min": round(float(np.min(others)), 4),
            "max": round(float(np.max(others)), 4),
        },
        "items_per_s": round(len(rows) / seconds, 2),
        "matches_LocalTeacher_generate_on_4_items": all(agree),
    }


def perplexity(teacher: LocalTeacher, prompts: list[str], choices: list[Choice]) -> float:
    """exp(mean NLL) of the answers' tokens under the plain model (no bias), one full pass each."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for prompt, choice in zip(prompts, choices, strict=True):
            ids = teacher._encode(TeacherRequest(messages=(("user", prompt),)))
            gen = choice.token_ids or []
            if not gen:
                continue
            logits = teacher.lm(torch.tensor([ids + gen])).logits[0, len(ids) - 1 : -1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(gen)[:, None])
            total -= float(logp.sum())
            count += len(gen)
    return float(np.exp(total / count))


def reported_perplexity(choices: list[Choice]) -> float:
    """The same figure from the log-probs the plain teacher reported while sampling."""
    lps = [lp for c in choices for lp in (c.token_logprobs or [])]
    return float(np.exp(-np.mean(lps)))


def processor_ms(key: WatermarkKey, batch: int, vocab: int) -> float:
    """Median time of one watermark step (green lists + bias) on (batch, vocab) logits."""
    processor = WatermarkProcessor(key)
    logits = torch.randn(batch, vocab)
    contexts = [[int(t)] for t in torch.randint(0, vocab, (batch,))]
    times = []
    for _ in range(11):
        start = time.perf_counter()
        processor(logits, contexts)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times[1:])), 1)


# ---- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", type=int, default=208, help="watermarked answers")
    parser.add_argument("--baseline-outputs", type=int, default=48, help="unwatermarked answers")
    parser.add_argument("--quality-per-class", type=int, default=40)
    parser.add_argument("--quality-keys", type=int, default=16)
    parser.add_argument("--fp-keys", type=int, default=20)
    parser.add_argument("--context-width", type=int, default=2)
    parser.add_argument("--fp-tokens", type=int, default=200, help="tokens per joined gloss text")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub
    if args.threads:
        torch.set_num_threads(args.threads)
    load_at_start = round(os.getloadavg()[0], 2)
    wall = time.perf_counter()
    key = bench_key(args.seed, args.context_width)

    teacher = LocalTeacher.load(DEFAULT_TEACHER, batch_size=args.batch_size, watermark=key)
    # The same weights without the key: the baseline differs in the watermark only.
    plain = LocalTeacher(
        teacher.lm, teacher.tokenizer, name=teacher.model, batch_size=args.batch_size
    )
    tokenizer = teacher.tokenizer
    result: dict[str, Any] = {
        "benchmark": "watermark",
        "teacher": f"{DEFAULT_TEACHER} (fp32)",
        "key": {
            "key_id": key.key_id,
            "gamma": key.gamma,
            "delta": key.delta,
            "context_width": key.context_width,
        },
        "sampling": {"temperature": 1.0, "top_p": None, "max_tokens": MAX_TOKENS, "chat": True},
    }

    log("false positives on WordNet glosses")
    start = time.perf_counter()
    gloss_texts = join_to_length(wordnet_glosses(), tokenizer, args.fp_tokens)
    gloss_ids = tokenizer(gloss_texts, add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(args.seed + 1000)
    keys = [key] + [
        WatermarkKey(rng.bytes(32), context_width=key.context_width)
        for _ in range(args.fp_keys - 1)
    ]
    result["false_positives_wordnet"] = {
        "source": "WordNet 3.0 glosses (Debian wordnet-base), joined in file order",
        **false_positives(gloss_ids, keys),
        "seconds": round(time.perf_counter() - start, 1),
    }

    log("quality: WordNet category task by generation")
    result["quality_category_task"] = category_task(
        plain, key, args.quality_per_class, args.quality_keys, args.seed
    )

    prompts = chat_prompts(args.outputs, args.seed)
    log(f"{len(prompts)} watermarked answers")
    marked, marked_s = generate(teacher, prompts)
    log(f"{args.baseline_outputs} unwatermarked answers to the same first prompts")
    base_prompts = prompts[: args.baseline_outputs]
    unmarked, unmarked_s = generate(plain, base_prompts)

    lengths = [len(c.token_ids or []) for c in marked]
    texts = [c.text for c in marked]
    marked_found = detect_texts(texts, key, tokenizer)
    result["power"] = {
        "from_text": power(marked_found, lengths, texts),
        "from_sampled_ids": power(
            detect_many([c.token_ids or [] for c in marked], key), lengths, None
        ),
    }
    plain_found = detect_texts([c.text for c in unmarked], key, tokenizer)
    result["false_positives_unwatermarked_gemma"] = {
        "texts": len(plain_found),
        "p_below_1e-3": sum(d.p_value < ALPHA for d in plain_found),
        "z_median": round(float(np.median([d.z for d in plain_found])), 2),
        "z_max": round(float(max(d.z for d in plain_found)), 2),
    }
    log("perplexity under the unwatermarked model")
    pair = marked[: len(base_prompts)]
    result["quality_perplexity"] = {
        "answers_each": len(base_prompts),
        "watermarked": round(perplexity(plain, base_prompts, pair), 3),
        "unwatermarked": round(perplexity(plain, base_prompts, unmarked), 3),
        "unwatermarked_from_reported_logprobs": round(reported_perplexity(unmarked), 3),
        "mean_tokens_watermarked": float(np.mean([len(c.token_ids or []) for c in pair])),
        "mean_tokens_unwatermarked": float(np.mean([len(c.token_ids or []) for c in unmarked])),
        "ended_early_watermarked": sum(n < MAX_TOKENS for n in lengths[: len(base_prompts)]),
        "ended_early_unwatermarked": sum(len(c.token_ids or []) < MAX_TOKENS for c in unmarked),
        "repetitive_watermarked": repetitive(marked_found[: len(base_prompts)]),
        "repetitive_unwatermarked": repetitive(plain_found),
    }
    tokens_marked = sum(lengths[: len(base_prompts)])
    tokens_plain = sum(len(c.token_ids or []) for c in unmarked)
    vocab = teacher.lm.config.vocab_size
    result["generation_tokens_per_s"] = {
        "watermarked": round(sum(lengths) / marked_s, 1),
        "unwatermarked": round(tokens_plain / unmarked_s, 1),
        "note": f"batch {args.batch_size}; watermarked over all {len(marked)} answers "
        f"({tokens_marked} tokens in the first {len(base_prompts)})",
        f"watermark_step_ms_batch_{args.batch_size}": processor_ms(key, args.batch_size, vocab),
        "watermark_step_ms_batch_1": processor_ms(key, 1, vocab),
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine slows every figure; the 1-min load average says how much.
        "load_avg_at_start_and_end": [load_at_start, round(os.getloadavg()[0], 2)],
    }
    result["wall_s"] = round(time.perf_counter() - wall, 1)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
