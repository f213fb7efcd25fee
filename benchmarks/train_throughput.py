"""Training throughput: stillroom vs TRL on the same tiny student and data, same run.

Floors (the issue): sequence KD >= 1.0x TRL's SFTTrainer; top-k logit KD from the store
>= 2x TRL's GKDTrainer off-policy (lmbda=0, which runs the teacher live every step).

Setup, built in a temp folder: a byte-level BPE tokenizer trained in-process, a random
Gemma 3 teacher (4 layers, hidden 256) and student (2 layers, hidden 128) sharing it; the
teacher answers N prompts through LocalTeacher (64 new tokens, top-20 log-probs) into a run
store. Every system then trains the same saved student init on the same token sequences
(the store's prompt + completion ids), one epoch, the same number of optimizer steps and
examples per step, fp32, the same torch threads, each in its own process so peak RSS is its
own. stillroom batches by a token budget; the budget is chosen so its length-bucketed
batches number exactly as many as TRL's fixed-size ones, and TRL gets its own length
grouping (train_sampling_strategy="group_by_length"), so neither pays for needless padding.

tokens/s = non-padding tokens (prompt + completion) trained on / seconds of the training
loop (model load and dataset preparation excluded); tokens per CPU second beside it. Systems
run in alternating rounds so load from other work on the machine hits all alike; the JSON
keeps every round and reports the median. One torch thread by default: with two, any other
process on the cores stalls OpenMP's barriers and the same run swings 3x from round to round
(--threads 2 on an idle machine).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_throughput.py [--prompts 320] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYSTEMS = ("stillroom_sequence", "trl_sft", "stillroom_logits", "trl_gkd")
SYLLABLES = [
    *("ka", "lo", "mi", "ten", "ra", "su", "vel", "dor", "an", "ith", "pe", "qu", "zor"),
    *("bel", "ny", "ost", "ce", "fa", "gri", "hum", "jo", "wex", "ul", "ema", "tor", "sa"),
]
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]
MAX_TOKENS, TOP_K = 64, 20  # harvest: new tokens per prompt, top-k log-probs kept
TEACHER = {"layers": 4, "hidden": 256, "heads": 4}
STUDENT = {"layers": 2, "hidden": 128, "heads": 4}
MAX_LEN = 256
LR, WARMUP = 5e-4, 4


# --- setup (parent process) ------------------------------------------------------------------


def corpus(n: int, seed: int) -> list[str]:
    """Sentences of pseudo-words: enough distinct text for a few thousand BPE merges."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(3000)]
    return [" ".join(rng.choices(words, k=rng.randint(6, 18))) + "." for _ in range(n)]


def make_tokenizer(directory: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(20000, seed=1), trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.save_pretrained(directory)


def make_lm(
    directory: Path, tokenizer_dir: Path, shape: dict[str, int], seed: int, sharpen: float = 1.0
) -> Path:
    """A random Gemma 3 LM of `shape`, saved with the shared tokenizer. A random LM is near
    uniform; `sharpen` scales its (tied) embeddings so its next-token distribution is peaked
    (x4: entropy ~4.5 nats, top-20 ~half the mass) without collapsing into one repeated token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(directory)
    layers = shape["layers"]
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=shape["hidden"],
        intermediate_size=4 * shape["hidden"],
        num_hidden_layers=layers,
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"] // 2,
        head_dim=shape["hidden"] // shape["heads"],
        query_pre_attn_scalar=shape["hidden"] // shape["heads"],
        sliding_window=512,  # longer than any sequence: left and right padding agree
        layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
        max_position_embeddings=1024,
        final_logit_softcapping=30.0,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(sharpen)
    model.save_pretrained(directory)
    return directory


def harvest_raw(work: Path, name: str, teacher_dir: Path) -> dict[str, Any]:
    return {
        "name": name,
        "runs_dir": str(work / "runs"),
        "prompts": {"path": str(work / "prompts.jsonl"), "field": "text", "id_field": "id"},
        "teacher": {"kind": "local", "model": str(teacher_dir), "batch_size": 32},
        "generation": dict(max_tokens=MAX_TOKENS, temperature=1.0, seed=0, top_logprobs=TOP_K),
        "split": {"train": 1.0, "validation": 0.0, "test": 0.0},
    }


def harvest_store(work: Path, teacher_dir: Path, n_prompts: int) -> tuple[Path, float]:
    from stillroom.config import validate_config
    from stillroom.harvest.runner import harvest
    from stillroom.teachers.local import LocalTeacher

    with (work / "prompts.jsonl").open("w") as f:
        for i, text in enumerate(corpus(n_prompts, seed=2)):
            f.write(json.dumps({"id": f"p{i}", "text": f"Continue the story: {text}"}) + "\n")
    cfg = validate_config(harvest_raw(work, "harvest", teacher_dir), "bench")
    teacher = LocalTeacher.load(str(teacher_dir), batch_size=32)
    start = time.perf_counter()
    result = harvest(cfg, teacher=teacher, show_progress=False)
    seconds = time.perf_counter() - start
    if result.ok != n_prompts:
        raise SystemExit(f"harvest stored {result.ok} of {n_prompts} prompts")
    return cfg.run_dir, seconds


def load_sequences(run_dir: Path, max_len: int) -> tuple[list[tuple[str, list[int], int]], float]:
    """(prompt, prompt + completion ids, completion start) per train record, in key order, kept
    and cut exactly as stillroom's data pipeline does (the student shares the teacher's
    vocabulary); and the teacher's mean top-k probability mass, to show its signals are real."""
    import numpy as np

    from stillroom.harvest.signals import decode_topk
    from stillroom.harvest.store import RunStore

    store = RunStore.open_run(run_dir)
    out = []
    rest: list[float] = []
    for rec in store.iter_records("train"):
        rest.extend(decode_topk(rec["topk"]).rest_mass.tolist())
        prompt = np.frombuffer(rec["prompt_ids"], "<i4").tolist()
        completion = np.frombuffer(rec["token_ids"], "<i4").tolist()
        ids = (prompt + completion)[:max_len]
        if completion and len(ids) > len(prompt):
            out.append((json.loads(rec["request"])["prompt"], ids, len(prompt)))
    store.close()
    return out, 1.0 - statistics.mean(rest)


def buckets(lengths: list[int], budget: int) -> list[list[int]]:
    """stillroom's length bucketing: sort by length; start a new batch when (size + 1) x
    length would pass the token budget."""
    out: list[list[int]] = [[]]
    for n in sorted(lengths):
        if out[-1] and (len(out[-1]) + 1) * n > budget:
            out.append([])
        out[-1].append(n)
    return out


def stillroom_batch_tokens(lengths: list[int], n_batches: int) -> int:
    """The smallest token budget that cuts `lengths` into at most `n_batches` batches: the
    same steps per epoch as TRL's fixed batch. The JSON's `same_tokens` checks that every
    system really trained on the same tokens in the same steps."""
    lo, hi = max(lengths), max(lengths) * len(lengths)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if len(buckets(lengths, mid)) <= n_batches else (mid + 1, hi)
    return lo


# --- children: one system each, own process -----------------------------------------------


def rss_now_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_stillroom(s: dict[str, Any], objective: str) -> dict[str, Any]:
    import torch

    from stillroom.config import validate_config
    from stillroom.train.trainer import Trainer

    torch.set_num_threads(s["threads"])
    name = f"{objective}-{s['round']}"
    raw = harvest_raw(Path(s["work"]), name, Path(s["teacher_dir"]))
    raw["train"] = {
        "student": {"init": "pretrained", "path": s["student_dir"]},
        "objective": objective,
        "divergence": "forward_kl",
        "alpha": 1.0,  # pure KD, as GKD's loss: no hard-token CE term
        "temperature": 1.0,
        "max_steps": s["steps"],
        "batch_tokens": s["batch_tokens"],
        "max_len": s["max_len"],
        "lr": s["lr"],
        "warmup_steps": s["warmup_steps"],
        "eval_every": 0,
        "checkpoint_every": 0,
        "early_stopping_patience": None,
        "threads": s["threads"],
        "seed": 0,
    }
    cfg = validate_config(raw, "bench")
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(s["store"]), cfg.run_dir / "harvest.sqlite")
    trainer = Trainer(cfg, quiet=True)  # loads the student: not timed
    rss_start, cpu_start = rss_now_mb(), time.process_time()
    result = trainer.run()  # its elapsed_s is the loop alone, without saving the student
    cpu_s = time.process_time() - cpu_start  # this one includes the save (~0.1 s)
    return {
        "tokens": round(result.tokens_per_s * result.elapsed_s),
        "padded_positions": s["stillroom_padded_positions"],  # from the same bucketing rule
        "loop_s": result.elapsed_s,
        "loop_cpu_s": cpu_s,
        "steps": result.steps,
        "final_loss": result.final_train_loss,
        "rss_at_loop_start_mb": rss_start,
    }


def child_trl(s: dict[str, Any], kind: str) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.set_num_threads(s["threads"])
    torch.manual_seed(0)
    rows = [
        # "prompt" only satisfies GKD's collator; it reads the boundary from completion_mask
        {
            "prompt": prompt,
            "input_ids": ids,
            "completion_mask": [0] * start + [1] * (len(ids) - start),
        }
        for prompt, ids, start in s["sequences"]
    ]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(s["student_dir"])
    student = AutoModelForCausalLM.from_pretrained(s["student_dir"], dtype=torch.float32)
    common: dict[str, Any] = {
        "output_dir": str(Path(s["work"]) / f"trl-{kind}-{s['round']}"),
        "per_device_train_batch_size": s["batch"],
        "max_steps": s["steps"],
        "max_length": s["max_len"],
        "learning_rate": s["lr"],
        "warmup_steps": s["warmup_steps"],
        # stillroom's schedule: linear warmup, cosine to 10%; AdamW betas (0.9, 0.95)
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        "adam_beta2": 0.95,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "optim": "adamw_torch",
        # fp32 and no activation recomputation, as stillroom (TRL defaults: bf16, checkpointing)
        "bf16": False,
        "activation_checkpointing": False,
        "use_cpu": True,
        "train_sampling_strategy": "group_by_length",
        "dataloader_num_workers": 0,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 10,
        "disable_tqdm": True,
        "seed": 0,
    }
    clock: dict[str, float] = {}

    class LoopClock(TrainerCallback):  # the training loop alone, as stillroom's elapsed_s
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            clock["rss"] = rss_now_mb()
            clock["start"], clock["cpu_start"] = time.perf_counter(), time.process_time()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            clock["end"], clock["cpu_end"] = time.perf_counter(), time.process_time()

    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        base: Any = SFTTrainer
        args: Any = SFTConfig(**common, completion_only_loss=True)
        extra: dict[str, Any] = {}
    else:
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        base = GKDTrainer
        # lmbda=0: off-policy, the student never generates; beta=0: forward KL(teacher||student)
        args = GKDConfig(**common, lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False)
        teacher = AutoModelForCausalLM.from_pretrained(s["teacher_dir"], dtype=torch.float32)
        extra = {"teacher_model": teacher}
    tokens, positions = [0], [0]

    class Counting(base):  # counts the tokens (and padded positions) each step trains on
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            tokens[0] += int(inputs["attention_mask"].sum())
            positions[0] += inputs["attention_mask"].numel()
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = Counting(
        model=student,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[LoopClock()],
        **extra,
    )
    out = trainer.train()
    return {
        "tokens": tokens[0],
        "padded_positions": positions[0],
        "loop_s": clock["end"] - clock["start"],
        "loop_cpu_s": clock["cpu_end"] - clock["cpu_start"],
        "steps": out.global_step,
        "final_loss": next(
            (r["loss"] for r in reversed(trainer.state.log_history) if "loss" in r), None
        ),
        "rss_at_loop_start_mb": clock["rss"],
    }


def child(system: str, settings_path: Path, round_: int) -> None:
    s = json.loads(settings_path.read_text()) | {"round": round_}
    if system.startswith("stillroom_"):
        figures = child_stillroom(s, system.removeprefix("stillroom_"))
    else:
        figures = child_trl(s, system.removeprefix("trl_"))
    figures |= {
        "tokens_per_s": figures["tokens"] / figures["loop_s"],
        "tokens_per_cpu_s": figures["tokens"] / figures["loop_cpu_s"],
        "load_avg": round(os.getloadavg()[0], 2),
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(figures))


def run_child(system: str, settings_path: Path, round_: int, threads: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "TRL_EXPERIMENTAL_SILENCE": "1",
    }
    cmd = [sys.executable, __file__, "--child", system, "--settings", str(settings_path)]
    proc = subprocess.run(
        [*cmd, "--round", str(round_)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"{system} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the report --------------------------------------------------------------------------


PER_ROUND = ("tokens_per_s", "tokens_per_cpu_s", "loop_s", "peak_rss_mb")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "tokens_per_s": round(med("tokens_per_s"), 1),
        # CPU seconds of the process (all threads): less sensitive to other work on the machine
        "tokens_per_cpu_s": round(med("tokens_per_cpu_s"), 1),
        "peak_rss_mb": round(med("peak_rss_mb"), 1),
        "rss_at_loop_start_mb": round(med("rss_at_loop_start_mb"), 1),
        "tokens_per_round": runs[0]["tokens"],
        "padding_fraction": round(1 - runs[0]["tokens"] / runs[0]["padded_positions"], 3),
        "steps": runs[0]["steps"],
        "rounds": [
            {k: round(r[k], 2) for k in PER_ROUND} | {"final_loss": r["final_loss"]} for r in runs
        ],
    }


def machine(load_start: float, threads: int) -> dict[str, Any]:
    import torch
    import transformers
    import trl

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "torch_threads": threads,
        # Other work on the machine slows every figure; the 1-min load average says how much.
        "load_avg_at_start_and_end": [load_start, round(os.getloadavg()[0], 2)],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }


def prepare(work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Models, harvest and the shared settings; returns (settings, the JSON's setup)."""
    make_tokenizer(work / "tokenizer", args.vocab)
    teacher_dir = make_lm(work / "teacher", work / "tokenizer", TEACHER, 0, sharpen=4.0)
    student_dir = make_lm(work / "student", work / "tokenizer", STUDENT, 1)
    run_dir, harvest_s = harvest_store(work, teacher_dir, args.prompts)
    sequences, topk_mass = load_sequences(run_dir, MAX_LEN)
    steps = math.ceil(len(sequences) / args.batch)  # one epoch
    lengths = [len(ids) for _, ids, _ in sequences]
    budget = stillroom_batch_tokens(lengths, steps)
    settings = {
        "work": str(work),
        "store": str(run_dir / "harvest.sqlite"),
        "teacher_dir": str(teacher_dir),
        "student_dir": str(student_dir),
        "sequences": sequences,
        "batch": args.batch,
        "batch_tokens": budget,
        "stillroom_padded_positions": sum(len(b) * max(b) for b in buckets(lengths, budget)),
        "steps": steps,
        "max_len": MAX_LEN,
        "threads": args.threads,
        "lr": LR,
        "warmup_steps": WARMUP,
    }
    setup = {
        "architecture": "gemma3_text (random init, shared BPE tokenizer trained in-process)",
        "teacher": {**TEACHER, "params": param_count(teacher_dir)},
        "student": {**STUDENT, "params": param_count(student_dir), "init": "one saved folder"},
        "vocab": args.vocab,
        "dtype": "float32",
        "harvest": {
            "prompts": args.prompts,
            "max_tokens": MAX_TOKENS,
            "top_logprobs": TOP_K,
            "temperature": 1.0,
            "seconds": round(harvest_s, 1),
            "teacher_topk_mass_mean": round(topk_mass, 3),
        },
        "train_examples": len(sequences),
        "tokens_per_example": {
            "mean": round(statistics.mean(lengths), 1),
            "min": min(lengths),
            "max": max(lengths),
        },
        "steps": steps,
        "epochs": 1,
        "examples_per_step": args.batch,
        "stillroom_batch_tokens": settings["batch_tokens"],
        "max_len": MAX_LEN,
        "threads": args.threads,
        "optimizer": f"AdamW lr {LR}, betas (0.9, 0.95), wd 0, clip 1.0, warmup {WARMUP}, "
        "cosine to 10%",
        "stillroom_sequence": "objective sequence: CE on the teacher's completion tokens",
        "stillroom_logits": "objective logits: forward KL to the stored top-20 + rest bucket, "
        "alpha 1.0 (no CE term)",
        "trl_sft": "SFTTrainer, completion-only loss (completion_mask), pre-tokenized ids, "
        "group_by_length sampler, no activation checkpointing, fp32, logging_steps 10",
        "trl_gkd": "experimental GKDTrainer, lmbda 0 (off-policy: no student generation), "
        "beta 0 (forward KL over the full vocabulary), teacher loaded live, same args as SFT",
        "tokens_per_s": "non-padding prompt + completion tokens / seconds of the training loop "
        "(model load and dataset preparation excluded)",
        "rounds": args.rounds,
    }
    return settings, setup


def measure(settings_path: Path, rounds: int, threads: int) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}
    for round_ in range(rounds):  # alternate systems so drift hits all alike
        for name in SYSTEMS:
            runs[name].append(run_child(name, settings_path, round_, threads))
            print(f"round {round_} {name}: {runs[name][-1]}", file=sys.stderr)
    return runs


def ratio(a: dict[str, Any], b: dict[str, Any], key: str = "tokens_per_s") -> float:
    return round(a[key] / b[key], 2)


def report(
    runs: dict[str, list[dict[str, Any]]], setup: dict[str, Any], load_start: float, threads: int
) -> dict[str, Any]:
    figures = {name: summarize(r) for name, r in runs.items()}
    seq = ratio(figures["stillroom_sequence"], figures["trl_sft"])
    kd = ratio(figures["stillroom_logits"], figures["trl_gkd"])
    per_round = [
        {
            "sequence_vs_sft": ratio(runs["stillroom_sequence"][i], runs["trl_sft"][i]),
            "logits_vs_gkd": ratio(runs["stillroom_logits"][i], runs["trl_gkd"][i]),
            "load_avg": runs["trl_gkd"][i]["load_avg"],
        }
        for i in range(len(runs["trl_sft"]))
    ]
    return {
        "machine": machine(load_start, threads),
        "setup": setup,
        **figures,
        "sequence_vs_sft": seq,
        "logits_vs_gkd": kd,
        "ratios_per_round": per_round,
        "per_cpu_s": {  # the same ratios in tokens per CPU second
            "sequence_vs_sft": ratio(
                figures["stillroom_sequence"], figures["trl_sft"], "tokens_per_cpu_s"
            ),
            "logits_vs_gkd": ratio(
                figures["stillroom_logits"], figures["trl_gkd"], "tokens_per_cpu_s"
            ),
        },
        "floors": {"sequence_vs_sft": 1.0, "logits_vs_gkd": 2.0},
        "meets_floors": seq >= 1.0 and kd >= 2.0,
        # every system trained on exactly the same non-padding tokens, in the same steps
        "same_tokens": len({(f["tokens_per_round"], f["steps"]) for f in figures.values()}) == 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    ap.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--settings", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from a hub
    if args.child:
        child(args.child, args.settings, args.round)
        return

    import torch

    load_start = round(os.getloadavg()[0], 2)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="stillroom-train-bench-"))
    try:
        settings, setup = prepare(work, args)
        settings_path = work / "settings.json"
        settings_path.write_text(json.dumps(settings))
        runs = measure(settings_path, args.rounds, args.threads)
        json.dump(report(runs, setup, load_start, args.threads), sys.stdout, indent=2)
        print()
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def param_count(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


if __name__ == "__main__":
    main()
