"""Bytes per stored top-k entry: the compact codec against JSON, on real and synthetic rows.

Prints JSON for (a) the top-20 log-probs of the real Gemma 3 270M teacher at every position
it sampled (temperature 1, no truncation), (b) synthetic rows: top-20 of a softmax of
Gaussian or Zipf-like logits over 262,144 ids, and (c) the Gemma rows with ids remapped to a
per-record token table, as an API teacher's are stored. For each: bytes per entry of the
codec and of JSON ([[id, logprob], ...] per token) measured in the same run, the worst
reconstruction errors, and the median encode / decode time per record.

    HF_HUB_OFFLINE=1 python benchmarks/signal_size.py [--tokens 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

from stillroom.harvest.signals import decode_topk, encode_topk

os.environ.setdefault("HF_HUB_OFFLINE", "1")

K = 20
VOCAB = 262_144
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how photosynthesis works to a ten-year-old.",
    "List five tips for writing clean Python code, with a sentence on each.",
    "What were the main causes of the French Revolution?",
    "Describe the rules of chess for someone who has never played.",
    "Translate into French and explain the grammar: 'The cat is sleeping on the warm roof.'",
]

Record = tuple[np.ndarray, np.ndarray, np.ndarray]  # ids (T, k), logprobs (T, k), rest (T,)


def gemma_records(n_tokens: int, n_prompts: int) -> list[Record]:
    """Sample from the real teacher; keep the top-k of log_softmax at each generated step."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stillroom.runtime.gemma import default_teacher_dir

    folder = default_teacher_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS[:n_prompts]
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=n_tokens,
            min_new_tokens=n_tokens,  # full-length records, as a harvest at max_tokens gets
            return_dict_in_generate=True,
            output_logits=True,  # raw logits: the teacher's own distribution
            pad_token_id=tokenizer.pad_token_id,
        )
    print(f"sampled in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    logits = torch.stack(out.logits, dim=1).float()  # (B, T, V)
    logp = torch.log_softmax(logits, dim=-1)
    top = torch.topk(logp, K, dim=-1)
    rest = (1.0 - torch.exp(top.values.double()).sum(-1)).clamp(0.0, 1.0)  # (B, T)
    return [
        (top.indices[b].numpy(), top.values[b].numpy(), rest[b].numpy())
        for b in range(logits.shape[0])
    ]


def synthetic_records(kind: str, n_records: int, n_tokens: int, seed: int = 0) -> list[Record]:
    """Top-k of a full softmax over the vocabulary (as in tests/test_signals.py).

    gaussian: logits sigma * N(0, 1), sigma ~ U(1.5, 4.5) per row (flat to moderately peaked);
    zipf: logit of rank r is -s * ln(r) + N(0, 0.3^2), s ~ U(1, 2.5), ranks randomly
    permuted over the ids.
    """
    rng = np.random.default_rng(seed)
    log_rank = np.log(np.arange(1, VOCAB + 1))
    records = []
    for _ in range(n_records):
        ids = np.empty((n_tokens, K), dtype=np.int64)
        lps = np.empty((n_tokens, K), dtype=np.float32)
        for t in range(n_tokens):
            if kind == "gaussian":
                logits = rng.standard_normal(VOCAB) * rng.uniform(1.5, 4.5)
            else:
                logits = -rng.uniform(1.0, 2.5) * log_rank + 0.3 * rng.standard_normal(VOCAB)
                logits = logits[rng.permutation(VOCAB)]
            logits -= np.logaddexp.reduce(logits)
            top = np.argpartition(-logits, K)[:K]
            top = top[np.argsort(-logits[top])]
            ids[t], lps[t] = top, logits[top]
        rest = np.clip(1.0 - np.exp(lps.astype(np.float64)).sum(axis=1), 0.0, 1.0)
        records.append((ids, lps, rest))
    return records


def as_token_table(records: list[Record]) -> list[Record]:
    """Ids as indices into each record's table of distinct tokens (API teachers)."""
    out = []
    for ids, lps, rest in records:
        _, local = np.unique(ids, return_inverse=True)
        out.append((local.reshape(ids.shape), lps, rest))
    return out


def json_bytes(ids: np.ndarray, lps: np.ndarray, decimals: int | None) -> int:
    """Size of [[[id, logprob], ...] per token], logprobs in float32's shortest repr or rounded."""
    if decimals is None:  # "-3.4388485": what a float32-native server prints
        values = np.vectorize(lambda x: float(str(x)))(lps.astype(np.float32)).tolist()
    else:
        values = np.round(lps.astype(np.float64), decimals).tolist()
    rows = [
        [[i, lp] for i, lp in zip(r_i, r_lp, strict=True)]
        for r_i, r_lp in zip(ids.tolist(), values, strict=True)
    ]
    return len(json.dumps(rows, separators=(",", ":")).encode())


def timed(fn: Any, repeat: int) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(records: list[Record], repeat: int) -> dict[str, Any]:
    n_entries = sum(int(np.isfinite(lps).sum()) for _, lps, _ in records)
    n_codec = n_json_full = n_json_4 = 0
    lp_err = rest_rel_err = 0.0
    enc_s, dec_s = [], []
    for ids, lps, rest in records:
        blob = encode_topk(ids, lps, rest)
        got = decode_topk(blob)
        assert np.array_equal(got.ids, ids), "ids must round-trip exactly"
        lp_err = max(lp_err, float(np.abs(got.logprobs.astype(np.float64) - lps).max()))
        rel = np.abs(got.rest_mass - rest) / np.maximum(rest, 1e-30)
        rest_rel_err = max(rest_rel_err, float(rel.max()))
        n_codec += len(blob)
        n_json_full += json_bytes(ids, lps, None)
        n_json_4 += json_bytes(ids, lps, 4)
        enc_s.append(timed(lambda i=ids, lp=lps, r=rest: encode_topk(i, lp, r), repeat))
        dec_s.append(timed(lambda b=blob: decode_topk(b), repeat))
    T = [ids.shape[0] for ids, _, _ in records]
    top1 = np.exp(np.concatenate([lps[:, 0] for _, lps, _ in records]))
    return {
        "records": len(records),
        "tokens_per_record": int(np.mean(T)),
        "k": K,
        "entries": n_entries,
        "codec_bytes_per_entry": round(n_codec / n_entries, 3),
        "json_bytes_per_entry": round(n_json_full / n_entries, 2),
        "json_4dp_bytes_per_entry": round(n_json_4 / n_entries, 2),
        "ratio_vs_json": round(n_json_full / n_codec, 1),
        "max_abs_logprob_error": round(lp_err, 5),
        "max_rel_rest_mass_error": float(f"{rest_rel_err:.3g}"),
        "encode_ms_per_record": round(1e3 * float(np.median(enc_s)), 3),
        "decode_ms_per_record": round(1e3 * float(np.median(dec_s)), 3),
        "top1_prob_median": round(float(np.median(top1)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200, help="tokens sampled per prompt")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--quick", action="store_true", help="synthetic rows only")
    args = parser.parse_args()
    repeat = 50
    result: dict[str, Any] = {"vocab": VOCAB}
    if not args.quick:
        gemma = gemma_records(args.tokens, args.prompts)
        result["gemma_3_270m"] = measure(gemma, repeat)
        result["gemma_3_270m_token_table_ids"] = measure(as_token_table(gemma), repeat)
    for kind in ("gaussian", "zipf"):
        result[f"synthetic_{kind}_logits"] = measure(synthetic_records(kind, 4, 256), repeat)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
