"""Run every benchmark, keep their JSON in benchmarks/results.json, and regenerate the README's
results table (between the `<!-- bench:start -->` and `<!-- bench:end -->` markers).

    python benchmarks/run_all.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
README = ROOT / "README.md"

_CURVES = ["benchmarks/distill_curves.py", "--config", "examples/wordnet-derived.yaml"]
# held-out seeds, audited against one known-benign reference log or another
_AUDIT_SEEDS = ["benchmarks/audit_detection.py", "--seeds", "61", "62", "63"]
# on-policy from the 1,000-answer logit-KD student at a tenth of the learning rate
_WARM_LR = [
    *_CURVES,
    "--sizes",
    "250",
    "1000",
    "3700",
    "--warm-start",
    "1000",
    "--reuse",
    "--on-policy-lr",
    "5e-5",
]


def _curve_row(start: str) -> tuple[str, str, str | None, str]:
    """The learning curve's row: on-policy's best chrF beside the best off-policy one's."""
    label = (
        f"Derived-word learning curve: on-policy's best chrF ({start}) vs the best "
        "off-policy student's (3,700 answers)"
    )
    return (label, "summary.on_policy_best_chrf", "summary.best_off_policy.chrf", "chrF")


# name -> (command, rows: (label, key of the figure, key of its baseline or None, unit))
BENCHMARKS: dict[str, tuple[list[str], list[tuple[str, str, str | None, str]]]] = {
    "harvest_throughput": (
        ["benchmarks/harvest_throughput.py"],
        [
            (
                "harvest vs bare `openai` loop, 2,000 req, concurrency 32, 50 ms server",
                "stillroom_harvest_req_per_s",
                "baseline_bare_openai_loop_req_per_s",
                "req/s",
            )
        ],
    ),
    "harvest_budget_kills": (
        ["benchmarks/harvest_budget_kills.py"],
        [
            (
                "harvest SIGKILLed 1-4 times and rerun, 20 schedules: worst billed / budget",
                "worst_billed_over_budget",
                "baseline_no_kill_billed_over_budget",
                "ratio",
            )
        ],
    ),
    "signal_size": (
        ["benchmarks/signal_size.py"],
        [
            (
                "top-20 signal size, real Gemma 3 270M",
                "gemma_3_270m.codec_bytes_per_entry",
                "gemma_3_270m.json_bytes_per_entry",
                "bytes/entry",
            ),
            (
                "top-20 max log-prob error, real Gemma",
                "gemma_3_270m.max_abs_logprob_error",
                None,
                "nats",
            ),
        ],
    ),
    "local_teacher": (
        ["benchmarks/local_teacher.py"],
        [
            ("Gemma 3 270M load from cache", "load_from_cache_s", None, "s"),
            (
                "Gemma generation, batch 16 vs batch 1 (top-20 recorded)",
                "batched_tokens_per_s",
                "batch1_tokens_per_s",
                "tokens/s",
            ),
        ],
    ),
    "train_throughput": (
        ["benchmarks/train_throughput.py"],
        [
            (
                "train: sequence KD vs TRL SFTTrainer (tokens/s)",
                "stillroom_sequence.tokens_per_s",
                "trl_sft.tokens_per_s",
                "tokens/s",
            ),
            (
                "train: top-k logit KD from the store vs TRL GKDTrainer (tokens/s)",
                "stillroom_logits.tokens_per_s",
                "trl_gkd.tokens_per_s",
                "tokens/s",
            ),
        ],
    ),
    "serve_load": (
        ["benchmarks/serve_load.py"],
        [
            (
                "gateway vs bare server at saturation, 64 clients, tiny model (req/s)",
                "gateway_req_per_s",
                "baseline_bare_req_per_s",
                "req/s",
            ),
            (
                "gateway vs bare server at half load (open loop): client p99 latency",
                "paced.gateway_latency_ms.p99",
                "paced.bare_latency_ms.p99",
                "ms",
            ),
            (
                "gateway vs bare server at half load: client p50 latency",
                "paced.gateway_latency_ms.p50",
                "paced.bare_latency_ms.p50",
                "ms",
            ),
            (
                "half load: client p99 latency outside the backend call",
                "paced.outside_backend_ms.gateway.p99",
                "paced.outside_backend_ms.bare.p99",
                "ms",
            ),
            (
                "gateway's own time per request at half load, p99 (Server-Timing)",
                "paced.in_gateway_overhead_ms.p99",
                None,
                "ms",
            ),
            (
                "log rows lost or duplicated, 5,000 requests",
                "log_rows_lost_or_duplicated",
                None,
                "rows",
            ),
            (
                "micro-batching: concurrency 16 vs sequential (req/s)",
                "microbatching.concurrency_16_req_per_s",
                "microbatching.sequential_req_per_s",
                "req/s",
            ),
        ],
    ),
    "trace_generate_speed": (
        ["benchmarks/trace_generate_speed.py"],
        [
            (
                "generating trace, 4-layer full-vocab Gemma: queries per CPU-minute vs e0defc9",
                "new_code.queries_per_cpu_minute",
                "old_code.queries_per_cpu_minute",
                "queries/CPU-min",
            )
        ],
    ),
    "serve_keyless_flood": (
        ["benchmarks/serve_keyless_flood.py"],
        [
            (
                "keyless flood (1,000 req, five 200 MB bodies): served clients' p99 vs quiet",
                "flood.served_during_flood.p99_ms",
                "quiet.p99_ms",
                "ms",
            ),
            (
                "keyless flood: served clients' p50 vs quiet",
                "flood.served_during_flood.p50_ms",
                "quiet.p50_ms",
                "ms",
            ),
            ("keyless flood: gateway peak RSS growth", "flood.rss_growth_mb", None, "MB"),
            ("keyless flood: request log growth", "flood.log_db_growth_bytes", None, "bytes"),
        ],
    ),
    "watermark": (
        ["benchmarks/watermark.py", "--threads", "1"],
        [
            (
                "watermark: 200-token Gemma answers with z > 4 (from text)",
                "power.from_text.fraction_z_above_4",
                None,
                "fraction",
            ),
            (
                "watermark: WordNet texts with p < 1e-3, 20 keys vs the exact test's own rate",
                "false_positives_wordnet.all_keys.fraction",
                "false_positives_wordnet.all_keys.exact_test_expected_fraction",
                "fraction",
            ),
            (
                "watermark: WordNet category accuracy, watermarked vs plain",
                "quality_category_task.accuracy_with_watermark",
                "quality_category_task.accuracy_without_watermark",
                "accuracy",
            ),
            (
                "watermark: answer perplexity, watermarked vs plain (lower is better)",
                "quality_perplexity.watermarked",
                "quality_perplexity.unwatermarked",
                "ppl",
            ),
        ],
    ),
    "trace_calibration": (
        ["benchmarks/trace_calibration.py"],
        [
            (
                "trace null, 200 keys, student of unwatermarked outputs: KS p of p-values",
                "generating_mode.student_of_unwatermarked.ks_p_randomized",
                None,
                "p",
            ),
            (
                "trace null: output match names a parent, of 20 independent models",
                "output_match_null.parent_named",
                None,
                "models",
            ),
        ],
    ),
    "kd_vs_sequence": (
        ["benchmarks/kd_vs_sequence.py", "--prompts", "160", "--steps", "50"],
        [
            (
                "Gemma harvest: val KL to teacher, logit KD vs sequence KD (lower is better)",
                "logit_kd.val_kl_to_teacher",
                "sequence_kd.val_kl_to_teacher",
                "nats",
            ),
        ],
    ),
    # The story runs first: the two benchmarks after it read its folder.
    "story": (
        ["benchmarks/story.py", "--fresh"],
        [
            ("stillroom demo: wall time, 2 cores", "total_s", None, "s"),
            (
                "demo: rival's student trace p vs control student's (same prompts, no mark)",
                "rival_trace_p",
                "control_trace_p",
                "p",
            ),
            ("demo: queries the rival's trace took", "rival_trace_queries", None, "queries"),
            ("demo: ordinary users flagged by the audit", "benign_users_flagged", None, "users"),
            (
                "demo: distiller accounts flagged by the audit",
                "distiller_accounts_flagged",
                None,
                "accounts",
            ),
        ],
    ),
    "trace_mixed": (
        ["benchmarks/trace_mixed.py", "--fraction", "0.1"],
        [
            (
                "trace: student with 10% of its data watermarked, p (Gemma scale)",
                "p_value",
                None,
                "p",
            ),
            ("trace: queries it took", "queries", None, "queries"),
            (
                "trace, reading mode, 300 fresh texts: 10%-watermarked student p vs 100% student p",
                "reading_mode.mixed.p_value",
                "reading_mode.all_watermarked.p_value",
                "p",
            ),
            (
                "trace, mass mode, same texts, teacher baseline: 10% student p vs 100% student p",
                "mass_mode.mixed.p_value",
                "mass_mode.all_watermarked.p_value",
                "p",
            ),
        ],
    ),
    "trace_mass_null": (
        ["benchmarks/trace_mass_null.py"],
        [
            (
                "trace null, mass mode: 2 null models x 2 baselines vs 100 foreign keys, KS p",
                "pooled_nulls.ks_p",
                None,
                "p",
            ),
            (
                "trace null, mass mode: share of the 400 with p <= 0.01",
                "pooled_nulls.share_p_at_most_1pct",
                None,
                "fraction",
            ),
        ],
    ),
    "trace_served": (
        ["benchmarks/trace_served.py"],
        [
            (
                "trace, served answers, teacher baseline: 10% student p vs 100% student p",
                "mixed10_p",
                "rival_p",
                "p",
            ),
            ("trace, served answers: texts read for it", "mixed10_texts_read", None, "texts"),
            (
                "trace null, served answers: 3 null models x 2 scorings x 100 runs, KS p",
                "pooled_nulls.ks_p",
                None,
                "p",
            ),
            (
                "trace null, served answers: share of the 600 with p <= 0.01",
                "pooled_nulls.share_p_at_most_1pct",
                None,
                "fraction",
            ),
        ],
    ),
    # Through an API only: the suspects served by `stillroom serve`, read with echo log-probs.
    "trace_served_api": (
        [
            "benchmarks/trace_served.py",
            "--api",
            "--suspects",
            "rival,mixed10,control",
            "--no-answers",
        ],
        [
            (
                "trace through an API, served answers: 10% student p vs 100% student p",
                "mixed10_p",
                "rival_p",
                "p",
            ),
            (
                "trace null through an API, served answers: control x 2 scorings x 100 runs, KS p",
                "pooled_nulls.ks_p",
                None,
                "p",
            ),
            (
                "trace null through an API, served answers: share of the 200 with p <= 0.01",
                "pooled_nulls.share_p_at_most_1pct",
                None,
                "fraction",
            ),
        ],
    ),
    # Through an API on a story made after the twins were chosen: 3 twins beside 1, same run.
    "trace_served_twins": (
        [
            "benchmarks/trace_served.py",
            "--api",
            "--story",
            "runs/story2",
            "--suspects",
            "mixed10,control",
            "--no-answers",
            "--twins",
            "3",
        ],
        [
            (
                "trace through an API, served answers, new story: 10% student p, 3 twins vs 1",
                "mixed10_p",
                "mixed10_p_one_twin",
                "p",
            ),
            (
                "trace null through an API, 3 twins, teacher baseline: control x 100 runs, KS p",
                "headline_null.ks_p",
                None,
                "p",
            ),
            (
                "trace null through an API, 3 twins, teacher baseline: share with p <= 0.01",
                "headline_null.share_p_at_most_1pct",
                None,
                "fraction",
            ),
        ],
    ),
    # Another new story, made after the two twin runs above were read.
    "trace_served_twins_story3": (
        [
            "benchmarks/trace_served.py",
            "--api",
            "--story",
            "runs/story3",
            "--suspects",
            "mixed10,control",
            "--no-answers",
            "--twins",
            "3",
        ],
        [
            (
                "trace through an API, served answers, story3: 10% student p, 3 twins vs 1",
                "mixed10_p",
                "mixed10_p_one_twin",
                "p",
            ),
            (
                "trace null through an API, 3 twins, teacher baseline, story3: KS p",
                "headline_null.ks_p",
                None,
                "p",
            ),
        ],
    ),
    # The same, on the story of the trace_served_api rows (its one-twin figure was seen first).
    "trace_served_twins_story1": (
        [
            "benchmarks/trace_served.py",
            "--api",
            "--suspects",
            "mixed10,control",
            "--no-answers",
            "--twins",
            "3",
        ],
        [
            (
                "trace through an API, served answers, API rows' story: 10% student p, 3 twins v 1",
                "mixed10_p",
                "mixed10_p_one_twin",
                "p",
            ),
            (
                "trace null through an API, 3 twins, teacher baseline, API rows' story: KS p",
                "headline_null.ks_p",
                None,
                "p",
            ),
        ],
    ),
    # The open-weights form on the same story as trace_served_api, for a side-by-side reading.
    "trace_served_open": (
        ["benchmarks/trace_served.py", "--suspects", "rival,mixed10,control", "--no-answers"],
        [
            (
                "trace with open weights, served answers (the API rows' story): 10% student p vs "
                "100% student p",
                "mixed10_p",
                "rival_p",
                "p",
            ),
            (
                "trace null with open weights (the API rows' story): control x 2 scorings x 100 "
                "runs, KS p",
                "pooled_nulls.ks_p",
                None,
                "p",
            ),
        ],
    ),
    "trace_match_demo": (
        ["benchmarks/trace_match_demo.py"],
        [
            (
                "output match, demo setting: right verdicts (parent or none), of 3 suspects",
                "right_verdicts",
                None,
                "suspects",
            ),
            (
                "output match: rival student's token match, Gemma vs closest reference",
                "rival.gemma_match_rate",
                "rival.best_reference_match_rate",
                "fraction",
            ),
            ("output match: rival student, Gemma named at Holm p", "rival.gemma_p_holm", None, "p"),
        ],
    ),
    "trace_null_gemma": (
        ["benchmarks/trace_null_gemma.py"],
        [
            (
                "trace null, Gemma scale: control student vs 200 foreign keys, KS p",
                "control.ks_p_randomized",
                None,
                "p",
            ),
            (
                "trace null, Gemma scale: control student, share of keys with p <= 0.01",
                "control.share_p_at_most_1pct",
                None,
                "fraction",
            ),
            (
                "trace null, Gemma scale: rival student vs 200 foreign keys, KS p",
                "distiller.ks_p_randomized",
                None,
                "p",
            ),
        ],
    ),
    "eval_efficiency": (
        ["benchmarks/eval_efficiency.py"],
        [
            (
                "eval timing, two identical models under bursty CPU load: worst throughput "
                "ratio's distance from 1, interleaved rounds vs one after another",
                "throughput_ratio_identical_models.new_interleaved_rounds.worst_off_by",
                "throughput_ratio_identical_models.baseline_old_sequential_measure.worst_off_by",
                "ratio",
            ),
            (
                "eval peak memory per model process vs weights + tokenizer + activations",
                "peak_memory_mb.new_worst_off_weights_tokenizer_activations",
                None,
                "fraction",
            ),
        ],
    ),
    "console_speed": (
        ["benchmarks/console_speed.py"],
        [
            (
                "console case queue, 10k accounts, 2M log rows, 500 cases, SQLite: p95 "
                "(baseline: /health)",
                "queue.p95_ms",
                "health.p95_ms",
                "ms",
            ),
            (
                "console case page, same database: p95 (baseline: /health)",
                "case.p95_ms",
                "health.p95_ms",
                "ms",
            ),
        ],
    ),
    # Needs a vLLM (scripts/start-vllm) and its URL in --url or STILLROOM_TEST_VLLM_URL.
    "vllm_gateway": (
        ["benchmarks/vllm_gateway.py"],
        [
            (
                "gateway --upstream vLLM vs vLLM bare, 16 clients, saturation",
                "gateway_vs_vllm_bare.saturation.gateway_req_per_s",
                "gateway_vs_vllm_bare.saturation.baseline_vllm_bare_req_per_s",
                "req/s",
            ),
            (
                "gateway --upstream vLLM vs vLLM bare, half load: p99 latency",
                "gateway_vs_vllm_bare.half_load.gateway_latency_ms.p99",
                "gateway_vs_vllm_bare.half_load.baseline_vllm_bare_latency_ms.p99",
                "ms",
            ),
            (
                "gateway vs bare, one request at a time, vLLM upstream: p99 latency",
                "gateway_vs_vllm_bare.one_at_a_time.gateway_latency_ms.p99",
                "gateway_vs_vllm_bare.one_at_a_time.baseline_bare_latency_ms.p99",
                "ms",
            ),
            (
                "gateway vs bare, one request at a time, model-less fake upstream: p99 latency",
                "gateway_vs_vllm_bare.one_at_a_time_light_upstream.gateway_latency_ms.p99",
                "gateway_vs_vllm_bare.one_at_a_time_light_upstream.baseline_bare_latency_ms.p99",
                "ms",
            ),
            (
                "our backend (stillroom serve --model) vs vLLM bare, Gemma 3 270M, concurrency 1",
                "our_backend_vs_vllm_bare.concurrency_1.stillroom_tokens_per_s",
                "our_backend_vs_vllm_bare.concurrency_1.baseline_vllm_bare_tokens_per_s",
                "tok/s",
            ),
            (
                "our backend vs vLLM bare, Gemma 3 270M, concurrency 16",
                "our_backend_vs_vllm_bare.concurrency_16.stillroom_tokens_per_s",
                "our_backend_vs_vllm_bare.concurrency_16.baseline_vllm_bare_tokens_per_s",
                "tok/s",
            ),
        ],
    ),
    # Needs a vLLM (scripts/start-vllm) and its URL in STILLROOM_TEST_VLLM_URL.
    "vllm_harvest": (
        ["benchmarks/vllm_harvest.py"],
        [
            (
                "harvest from vLLM, top-20 log-probs with token ids, vs bare `openai` loop, "
                "concurrency 8",
                "throughput.stillroom_harvest.tokens_per_s",
                "throughput.bare_openai_loop.tokens_per_s",
                "tok/s",
            ),
            (
                "logit KD validation KL: student of a vLLM harvest vs of the local teacher's, "
                "3 seeds, scored on the local harvest",
                "logit_kd.on_one_reference.val_kl_vllm_harvest_mean",
                "logit_kd.on_one_reference.val_kl_local_harvest_mean",
                "KL",
            ),
        ],
    ),
    # Needs a vLLM started with the watermark plugin (scripts/start-vllm with
    # STILLROOM_WATERMARK_KEYS set, STILLROOM_WATERMARK_DEFAULT=none) and its URL exported.
    "student_variants": (
        ["benchmarks/student_variants.py", "--config", "examples/wordnet-derived.yaml"],
        [
            (
                "Derived-word student, 7,000-prompt transfer set: chrF vs teacher, test split",
                "variants.transfer-set.test.student.chrf",
                "variants.transfer-set.test.teacher.chrf",
                "chrF",
            ),
            (
                "Derived-word student, 7,000-prompt transfer set: chrF vs teacher, validation "
                "split (held out from the choice)",
                "variants.transfer-set.validation.student.chrf",
                "variants.transfer-set.validation.teacher.chrf",
                "chrF",
            ),
            (
                "Derived-word student, labelled prompts only (4 layers, 600 steps), validation "
                "split",
                "variants.four-layers-600-steps.validation.student.chrf",
                "variants.four-layers-600-steps.validation.teacher.chrf",
                "chrF",
            ),
            (
                "Derived-word student: 2 layers with trainable embeddings, test split",
                "variants.two-layers.test.student.chrf",
                "variants.two-layers.test.teacher.chrf",
                "chrF",
            ),
        ],
    ),
    "distill_curves": (
        [*_CURVES, "--sizes", "250", "1000", "3700"],
        [_curve_row("40 steps from a fresh student")],
    ),
    "distill_curves_warm": (
        [*_CURVES, "--sizes", "250", "1000", "3700", "--warm-start", "1000", "--reuse"],
        [_curve_row("40 steps from the 1,000-answer logit-KD student")],
    ),
    "distill_curves_warm_lr": (
        [*_WARM_LR],
        [_curve_row("40 steps at learning rate 5e-5 from the 1,000-answer student")],
    ),
    # Needs `stillroom serve --model gemma-3-270m --port 8123` and a key of it in
    # STILLROOM_SCORING_KEY; compare with distill_curves' first two on-policy points.
    "distill_curves_served": (
        [
            *_CURVES,
            "--sizes",
            "250",
            "1000",
            "3700",
            "--reuse",
            "--on-policy-steps",
            "10",
            "--points",
            "2",
            "--scoring-url",
            "http://127.0.0.1:8123/v1",
        ],
        [_curve_row("10 steps from a fresh student, scored through stillroom serve")],
    ),
    # As distill_curves_served, from the 1,000-answer student at the learning rate of
    # distill_curves_warm_lr (compare point by point); killed (SIGKILL) past step 15 and
    # resumed; --gateway-db is the serving gateway's database.
    "distill_curves_warm_served": (
        [
            *_WARM_LR,
            "--scoring-url",
            "http://127.0.0.1:8123/v1",
            "--kill-after",
            "15",
            "--gateway-db",
            "gateway.sqlite",
        ],
        [
            _curve_row(
                "40 steps at 5e-5 from the 1,000-answer student, through stillroom serve,"
                " killed and resumed"
            )
        ],
    ),
    # Logs made once per seed in --data (about 2.5 minutes per 1,000 accounts), then audited.
    "audit_detection": (
        [*_AUDIT_SEEDS, "--reference-seed", "97", "--reference-accounts", "3000"],
        [
            (
                "Audit, held-out seeds, 3,000-account benign reference, --fpr 0.003: actors caught",
                "reference.0.003.recall_actors",
                None,
                "fraction",
            ),
            (
                "Audit, same run, --fpr 0.003: measured benign FPR (volume baseline beside it)",
                "reference.0.003.measured_fpr",
                "volume_baseline.0.003.measured_fpr",
                "fraction",
            ),
            (
                "Audit, same run: hydra accounts in one unit with their siblings",
                "linkage.hydra_share",
                None,
                "fraction",
            ),
        ],
    ),
    "audit_detection_small_reference": (
        [*_AUDIT_SEEDS, "--reference-seed", "96", "--reference-accounts", "1000"],
        [
            (
                "Audit, held-out seeds, 1,000-account benign reference, --fpr 0.003: actors caught",
                "reference.0.003.recall_actors",
                None,
                "fraction",
            )
        ],
    ),
    "audit_early": (
        [
            "benchmarks/audit_early.py",
            "--seed",
            "61",
            "--reference-seed",
            "97",
            "--reference-accounts",
            "3000",
        ],
        [
            (
                "Audit --state replay in 12-hour steps: low-and-slow's worst hours to detect",
                "time_to_detect_hours.low_and_slow.worst",
                None,
                "hours",
            )
        ],
    ),
    "vllm_watermark": (
        ["benchmarks/vllm_watermark.py"],
        [
            (
                "vLLM watermark plugin: 200-token answers with z > 4",
                "detected_z_over_4",
                None,
                "fraction",
            ),
            (
                "vLLM watermark plugin: answers x fresh keys with p <= 1e-3",
                "false_positive_fresh_keys.rate",
                None,
                "fraction",
            ),
            (
                "vLLM tokens/s with the watermark plugin vs without (same server, interleaved)",
                "tokens_per_s_marked",
                "tokens_per_s_unmarked_baseline",
                "tok/s",
            ),
        ],
    ),
}


def dig(data: dict[str, Any], dotted: str) -> Any:
    """data[a][b]... for "a.b...": a key that holds dots itself ("0.003", a rate) is found
    by joining parts until one matches."""
    parts = dotted.split(".")
    while parts:
        if not isinstance(data, dict):
            return None
        for n in range(1, len(parts) + 1):
            key = ".".join(parts[:n])
            if key in data:
                data, parts = data[key], parts[n:]
                break
        else:
            return None
    return data


def run(name: str) -> dict[str, Any]:
    cmd, _ = BENCHMARKS[name]
    print(f"== {name}: {' '.join(cmd)}", file=sys.stderr)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *cmd], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    data = last_json_object(out)
    data["_wall_s"] = round(time.perf_counter() - start, 1)
    return data


def last_json_object(out: str) -> dict[str, Any]:
    """The last JSON object a benchmark printed (some print progress objects before it)."""
    decoder, found, at = json.JSONDecoder(), None, out.find("{")
    while at != -1:
        try:
            found, end = decoder.raw_decode(out, at)
        except json.JSONDecodeError:
            end = at + 1
        at = out.find("{", end)
    if not isinstance(found, dict):
        raise SystemExit("the benchmark printed no JSON object")
    return found


def table(results: dict[str, Any]) -> str:
    lines = [
        "| benchmark | stillroom | baseline (same run) | ratio | command |",
        "|---|---|---|---|---|",
    ]
    for name, (cmd, rows) in BENCHMARKS.items():
        if name not in results:
            continue
        for label, key, base_key, unit in rows:
            value = dig(results[name], key)
            if value is None:  # a row added since this benchmark last ran
                continue
            base = dig(results[name], base_key) if base_key else None
            # A ratio of two p-values means nothing: they are shown side by side.
            ratio = f"{value / base:.2f}x" if base and value is not None and unit != "p" else ""
            base_txt = f"{base:g} {unit}" if base is not None else ""
            lines.append(
                f"| {label} | {value:g} {unit} | {base_txt} | {ratio} | `python {' '.join(cmd)}` |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=list(BENCHMARKS))
    ap.add_argument("--table-only", action="store_true", help="rewrite the README table only")
    ap.add_argument(
        "--record",
        nargs="*",
        default=[],
        metavar="NAME=LOG",
        help="keep the JSON of a run made by hand (a benchmark needing a server) from its output",
    )
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for item in args.record:
        name, _, log = item.partition("=")
        if name not in BENCHMARKS:
            raise SystemExit(f"--record {item}: no benchmark {name!r}")
        results[name] = last_json_object(Path(log).read_text())
    for name in [] if args.table_only or args.record else args.only or list(BENCHMARKS):
        results[name] = run(name)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results["_machine"] = machine
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    text = README.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    block = f"{start}\nMachine: {machine}. Produced by `make bench`.\n\n{table(results)}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text += f"\n## Results\n\n{block}\n"
    README.write_text(text)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
