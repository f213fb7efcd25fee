"""Learning curves: a generative student's quality against the teacher tokens it cost, for
sequence KD, top-k logit KD and on-policy distillation.

Same task, same student init, same prompts, same steps for every run:
- **off-policy** (sequence, logits): the teacher answers N training prompts once (its tokens,
  prompt and answer, are the price); the student trains on those N answers for `--steps`
  steps; one point per N in `--sizes`.
- **on-policy** (lambda 1): the student answers the training prompts itself and the teacher
  scores those answers (prompt and answer tokens are the price of each scoring call); one
  run of `--on-policy-steps` steps, evaluated at `--points` checkpoints along the way. It
  reads no stored teacher answer, so only its scoring calls are counted. Its steps are
  fewer: every step pays the teacher for a whole batch, so its token count, not its step
  count, is what the curve compares.
Quality is chrF against the task's gold text on the first `--test-items` test items, the
student answering greedily; the teacher's own chrF on the same items (its harvested
answers) is printed beside, with the task's trivial answers (copying the input, the most
common gold answer).

    python benchmarks/distill_curves.py --config examples/wordnet-derived.yaml \
        [--sizes 250 500 1000 2000] [--steps 300] [--points 6] [--work runs/curves] \
        [--warm-start 1000] [--reuse] [--on-policy-lr 5e-5] [--scoring-url URL]
        [--kill-after STEP] [--gateway-db gateway.sqlite]

With --kill-after, on-policy trains in a child process that is killed (SIGKILL) past that
checkpoint and resumed; `scoring_calls` then counts what was stored, paid and read back, and
with --gateway-db the requests the serving gateway logged in the same time.

Prints JSON; the summary says whether on-policy reached the best off-policy student's
quality with at most half its teacher tokens, or where it did not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from stillroom.config import HarvestConfig, load_config
from stillroom.evaluate.text import TextItems, load_text_items, most_common_answer, text_scores
from stillroom.harvest.runner import harvest
from stillroom.harvest.store import RunStore
from stillroom.student_config import StudentConfig
from stillroom.teacher_config import ApiTeacherConfig
from stillroom.train.trainer import train


def main() -> None:  # long: arguments and their checks, the off-policy curves, then one JSON
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--on-policy-steps", type=int, default=40)
    ap.add_argument("--on-policy-lr", type=float, default=None,
                    help="on-policy's learning rate (default: the config's)")  # fmt: skip
    ap.add_argument("--batch-tokens", type=int, default=512)
    ap.add_argument("--test-items", type=int, default=200)
    ap.add_argument("--divergence", default="reverse_kl")
    ap.add_argument(
        "--warm-start",
        type=int,
        default=None,
        metavar="N",
        help="on-policy starts from the logit-KD student of N answers (one of "
        "--sizes) and answers its N prompts; its teacher tokens count from that "
        "student's harvest",
    )
    ap.add_argument("--reuse", action="store_true",
                    help="score off-policy students already trained in --work")  # fmt: skip
    ap.add_argument("--scoring-url", default=None, metavar="URL",
                    help="on-policy's teacher scores through this OpenAI-compatible API (e.g. "
                         "`stillroom serve --model gemma-3-270m`, key in "
                         "STILLROOM_SCORING_KEY) instead of the local teacher")  # fmt: skip
    ap.add_argument("--kill-after", type=int, default=None, metavar="STEP",
                    help="on-policy trains in a child process, killed (SIGKILL) once its "
                         "checkpoint STEP is on disk and a scoring call past it is stored, "
                         "then resumed here")  # fmt: skip
    ap.add_argument("--gateway-db", type=Path, default=None,
                    help="with --scoring-url: the serving gateway's database, whose request "
                         "log is counted against the scores the run stored")  # fmt: skip
    ap.add_argument("--work", type=Path, default=Path("runs/curves"))
    args = ap.parse_args()
    every = max(1, args.on_policy_steps // args.points)
    if args.kill_after is not None and (
        args.kill_after % every or not 0 < args.kill_after < args.on_policy_steps
    ):
        ap.error(f"--kill-after {args.kill_after}: give a checkpoint step before the last, a "
                 f"multiple of {every} (--on-policy-steps / --points)")  # fmt: skip
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    base = base_config(args.config, args.work, args.steps)
    base.train.batch_tokens = args.batch_tokens
    harvest(base, show_progress=False)
    items = load_text_items(base)
    n_test = min(args.test_items, len(items.requests))
    gold = (items.gold or [])[:n_test]
    curves: dict[str, list[dict[str, Any]]] = {"sequence": [], "logits": []}
    for size in args.sizes:
        for objective in ("sequence", "logits"):
            cfg = subset_run(base, f"{objective}-{size}", size, objective=objective)
            if not (args.reuse and (cfg.run_dir / "student" / "config.json").is_file()):
                train(cfg, quiet=True)
            point = {"train_answers": size, "teacher_tokens": harvest_tokens(cfg)}
            curves[objective].append(point | quality(cfg, cfg.run_dir / "student", n_test, gold))
            print(json.dumps({objective: curves[objective][-1]}), flush=True)
    if args.warm_start is not None and args.warm_start not in args.sizes:
        raise SystemExit(f"--warm-start {args.warm_start}: not one of --sizes {args.sizes}")
    curves["on_policy"] = on_policy_curve(base, args, n_test, gold)
    teacher = text_scores(items.teacher[:n_test], gold)
    result = {
        "benchmark": "distill_curves",
        "config": str(args.config),
        "steps": args.steps,
        "test_items": n_test,
        "teacher": teacher,
        "trivial": trivial_answers(base, items, n_test),
        "curves": curves,
        "summary": summary(curves),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2))


def base_config(path: Path, work: Path, steps: int) -> HarvestConfig:
    """The task's config with a harvest that keeps top-20 (logit KD needs it) in `work`.

    The curves read the labelled prompts only, no transfer set, and the student the curves
    were first measured with (1,024 MLP neurons a layer, the teacher's top 3 in its
    vocabulary), so that the recorded figures stay reproducible."""
    cfg = load_config(path)
    cfg.prompts.transfer_path = None
    cfg.train.student.intermediate_size = 1024
    cfg.train.student.vocab_top_k = 3
    cfg.name = "harvest"
    cfg.runs_dir = work
    cfg.generation.top_logprobs = max(cfg.generation.top_logprobs, 20)
    cfg.train.max_steps = steps
    cfg.train.eval_every = 0
    cfg.train.early_stopping_patience = None
    cfg.train.checkpoint_every = 0
    return cfg


def subset_run(base: HarvestConfig, name: str, size: int, **train_over: Any) -> HarvestConfig:
    """A run folder whose store holds the first `size` training answers (key order) and
    every validation and test call."""
    cfg = base.model_copy(deep=True)
    cfg.name = name
    for key, value in train_over.items():
        setattr(cfg.train, key, value)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    store = cfg.run_dir / "harvest.sqlite"
    if not store.exists():
        shutil.copyfile(base.run_dir / "harvest.sqlite", store)
        with sqlite3.connect(store) as db:
            db.execute(
                "DELETE FROM calls WHERE split = 'train' AND key NOT IN (SELECT key FROM calls"
                " WHERE split = 'train' AND status = 'ok' ORDER BY key LIMIT ?)",
                (size,),
            )
    return cfg


def harvest_tokens(cfg: HarvestConfig) -> int:
    """Teacher tokens (prompt and answer) of the training answers the student read."""
    with sqlite3.connect(cfg.run_dir / "harvest.sqlite") as db:
        (n,) = db.execute(
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM calls"
            " WHERE split = 'train' AND status = 'ok'"
        ).fetchone()
    return int(n)


def on_policy_curve(
    base: HarvestConfig, args: argparse.Namespace, n_test: int, gold: list[str]
) -> list[dict[str, Any]]:
    every = max(1, args.on_policy_steps // args.points)
    name, warm_tokens = "on-policy", 0
    if args.warm_start is not None:
        name = f"on-policy-from-{args.warm_start}"
        start = subset_run(base, f"logits-{args.warm_start}", args.warm_start)
        warm_tokens = harvest_tokens(start)
    if args.on_policy_lr is not None:
        name += f"-lr{args.on_policy_lr:g}"  # a folder of its own: no scores read back
    if args.scoring_url is not None:
        name += "-served"
    # Warm, it writes answers to the prompts its start trained on: its trimmed vocabulary
    # holds those prompts' tokens, not every item's.
    prompts = max(args.sizes) if args.warm_start is None else args.warm_start
    cfg = subset_run(base, name, prompts, objective="on_policy",
                     divergence=args.divergence, checkpoint_every=every,
                     keep_checkpoints=args.points + 1,
                     max_steps=args.on_policy_steps)  # fmt: skip
    cfg.train.on_policy.lmbda = 1.0
    if args.on_policy_lr is not None:
        cfg.train.lr = args.on_policy_lr
    if args.scoring_url is not None:
        # The served model's local copy (the config's local teacher, which the server
        # serves): the fresh student is cut from it, a warm one's ids map to it.
        from stillroom.train.student_vocab import teacher_folder

        folder = str(teacher_folder(base))
        cfg.teacher = ApiTeacherConfig(model=base.teacher.model, base_url=args.scoring_url,
                                       api_key_env="STILLROOM_SCORING_KEY",
                                       folder=folder)  # fmt: skip
    if args.warm_start is not None:
        # The trained student, its vocabulary and teacher map as saved.
        frozen = base.train.student.freeze_embeddings
        cfg.train.student = StudentConfig(
            init="pretrained", path=start.run_dir / "student", freeze_embeddings=frozen
        )
    if args.kill_after is not None and (cfg.run_dir / "checkpoints").exists():
        raise SystemExit(f"--kill-after needs a fresh run: remove {cfg.run_dir} first")
    logged = gateway_requests(args.gateway_db)
    kill = killed_and_resumed(cfg, args.kill_after) if args.kill_after is not None else None
    result = train(cfg, resume=kill is not None, quiet=True)
    if args.gateway_db is not None or kill is not None:
        calls = {
            "stored_scores": score_totals(cfg)[0],
            "paid_by_the_last_run": (result.on_policy or {}).get("scoring_calls_paid"),
            "read_back_by_the_last_run": (result.on_policy or {}).get("scoring_calls_reused"),
        }
        if args.gateway_db is not None:
            calls["gateway_requests"] = gateway_requests(args.gateway_db) - logged
        print(json.dumps({"scoring_calls": calls | (kill or {})}), flush=True)
    paid = paid_by_step(cfg.run_dir / "train_log.jsonl", warm_tokens, kill)
    points = []
    for ckpt in sorted((cfg.run_dir / "checkpoints").glob("step-*")):
        step = int(ckpt.name.removeprefix("step-"))
        point = {"steps": step, "teacher_tokens": paid[step]} | quality(cfg, ckpt, n_test, gold)
        points.append(point)
        print(json.dumps({"on_policy": point}), flush=True)
    return points


def quality(cfg: HarvestConfig, folder: Path, n_test: int, gold: list[str]) -> dict[str, Any]:
    """chrF (and exact match) of the student's greedy answers on the first test items."""
    from stillroom.teachers.local import LocalTeacher
    from stillroom.train.students import load_student

    student = load_student(folder, cfg.eval.student_dtype)
    runner = LocalTeacher(student.model, student.tokenizer, name=str(folder), batch_size=32)
    requests = load_text_items(cfg).student_requests[:n_test]
    answers: list[str] = []
    for i in range(0, len(requests), 32):
        answers += [c.choices[0].text for c in runner.generate(requests[i : i + 32])]
    return text_scores(answers, gold)


def trivial_answers(base: HarvestConfig, items: TextItems, n_test: int) -> dict[str, Any]:
    """The floors any student must clear, as eval scores them: copying the input, and the
    train split's most common gold answer given to every item."""
    gold = (items.gold or [])[:n_test]
    common = most_common_answer(base, gold=True)
    return {
        "copy_input": text_scores(items.inputs[:n_test], gold),
        "most_common_gold": text_scores([common] * len(gold), gold),
    }


def paid_by_step(log: Path, start: int, kill: dict[str, Any] | None) -> dict[int, int]:
    """Teacher tokens paid by each logged step: `start` (the warm start's harvest), plus the
    run's own scoring tokens. A run resumed from the checkpoint of `resumed_from_step` logs
    its own count from 0 and logs every later step again (its rows come last and win: early
    stopping is off here): past that step, what the killed run stored is added."""
    kill = kill or {}
    after = kill.get("resumed_from_step", kill.get("killed_after_step"))
    killed = kill.get("tokens_stored_by_the_killed_run", 0)
    paid: dict[int, int] = {}
    for row in map(json.loads, log.read_text().splitlines()):
        if "scoring_tokens_paid" in row:
            resumed = after is not None and row["step"] > after
            paid[row["step"]] = start + (killed if resumed else 0) + row["scoring_tokens_paid"]
    return paid


def score_totals(cfg: HarvestConfig) -> tuple[int, int]:
    """(scoring calls, their tokens) in the run's store, as the store counts them."""
    store = RunStore.open_run(cfg.run_dir)
    try:
        calls, tokens, _ = store.score_totals()
    finally:
        store.close()
    return calls, tokens


def gateway_requests(db: Path | None) -> int:
    """Requests in a gateway's log (0 without one): counted before and after a run."""
    if db is None:
        return 0
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


def killed_and_resumed(cfg: HarvestConfig, step: int) -> dict[str, Any]:
    """Train in a child process and kill -9 it past checkpoint `step`, as an outage would;
    the caller resumes. Returns what the killed run had stored."""
    import signal
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tests.helpers.kills import train_until_checkpoint

    proc = train_until_checkpoint(cfg, step, timeout_s=3600)
    at_checkpoint = score_totals(cfg)[0]
    deadline = time.monotonic() + 600
    while score_totals(cfg)[0] == at_checkpoint:  # let it pay for a batch past the checkpoint
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the child run ended or stalled before it was killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from stillroom.train.trainer import latest_checkpoint

    latest = latest_checkpoint(cfg.run_dir / "checkpoints")
    calls, tokens = score_totals(cfg)
    return {
        "killed_after_step": step,
        "resumed_from_step": int(latest.name.removeprefix("step-")) if latest else 0,
        "stored_by_the_killed_run": calls,
        "tokens_stored_by_the_killed_run": tokens,
    }


def summary(curves: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The best off-policy student, and the teacher tokens on-policy needed to match it."""
    off = [(p["chrf"], p["teacher_tokens"], name) for name in ("sequence", "logits")
           for p in curves[name]]  # fmt: skip
    best_chrf, best_tokens, best_name = max(off, key=lambda x: (x[0], -x[1]))
    reached = [p for p in curves["on_policy"] if p["chrf"] >= best_chrf]
    out: dict[str, Any] = {
        "best_off_policy": {
            "objective": best_name,
            "chrf": best_chrf,
            "teacher_tokens": best_tokens,
        },
        "on_policy_best_chrf": max((p["chrf"] for p in curves["on_policy"]), default=None),
    }
    if reached:
        ratio = reached[0]["teacher_tokens"] / max(best_tokens, 1)
        out["on_policy_tokens_to_match"] = reached[0]["teacher_tokens"]
        out["token_ratio"] = round(ratio, 3)
        out["verdict"] = (
            f"on-policy matched the best off-policy student ({best_name}, chrF {best_chrf}) "
            f"with {ratio:.2f}x its teacher tokens"
        )
    else:
        out["verdict"] = (
            f"on-policy did not reach the best off-policy student ({best_name}, chrF "
            f"{best_chrf}) within the steps given"
        )
    return out


if __name__ == "__main__":
    main()
