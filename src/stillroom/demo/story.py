"""`stillroom demo`: the whole story on one machine, each stage resumable.

1. A provider serves Gemma 3 270M through `stillroom serve`, its outputs watermarked.
2. Ordinary users and a distiller (several accounts) use the API; the distiller harvests
   answers to its own prompts with `stillroom harvest`.
3. The same prompts are answered by the same model without the watermark (a second gateway):
   the control harvest.
4. Both harvests train a student (`stillroom train`, sequence KD): the rival and the control.
5. `audit` reads the gateway's log: which accounts harvest, and from when it could tell.
6. `trace` questions both students with the key: the rival's p-value, and the control's.
7. One HTML report tells it in order.

Each stage writes its result under the output folder and is skipped when rerun.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stillroom.errors import InputError, StillroomError
from stillroom.jsonl_texts import jsonl_lines
from stillroom.reportkit.files import write_atomic

MODEL = "gemma-3-270m"
TASK_FILE = Path("examples/data/wordnet-nouns.jsonl")
DISTILL_TEMPLATE = "What is a {headword}? Answer in two sentences."
# What the distiller would have paid at a small hosted model's API price (USD per 1M tokens).
PRICE_IN, PRICE_OUT = 0.10, 0.40
# The audit as a provider would run it: a low false-positive rate, and no verdict on an
# account that sent too few requests to have harvested anything.
FPR, MIN_REQUESTS = 0.001, 5


@dataclass(frozen=True)
class Scale:
    benign_users: int
    benign_requests: tuple[int, int]  # each user sends between these many
    distiller_accounts: int
    distill_prompts: int
    max_tokens: int
    train_steps: int
    trace_budget: int
    harvest_rate: float = 1.5  # expected distiller requests/s: the users' requests span as long


# Measured on 2 cores: 1.5 answers/s from the gateway, ~3 s per training step; 640
# watermarked answers and 60 steps gave p = 1e-11 after the trace's first 50 queries.
FULL = Scale(40, (3, 12), 3, 500, 64, 60, 1000)
QUICK = Scale(16, (2, 4), 2, 120, 48, 24, 300)


def run_demo(
    out: Path,
    *,
    quick: bool = False,
    scale: Scale | None = None,
    model: str = MODEL,
    task_file: Path = TASK_FILE,
    say: Any = None,
) -> dict[str, Any]:
    """Run (or finish) every stage under `out`; returns the story's figures.

    `model` is the served model (a folder, or the built-in teacher); `scale` overrides the
    sizes that `quick` picks."""
    say = say or (lambda m: sys.stderr.write(m + "\n"))
    scale = scale or (QUICK if quick else FULL)
    out.mkdir(parents=True, exist_ok=True)
    # A stage's time is kept from the run that did its work: a resumed run skips it.
    times_file = out / "stage_times.json"
    stages: dict[str, float] = json.loads(times_file.read_text()) if times_file.is_file() else {}

    def stage(name: str) -> Any:
        say(f"== {name}")
        return _Timed(stages, name, say, times_file)

    with stage("setup: watermark key, accounts, prompts"):
        cast = _setup(out, scale, task_file)
    with stage("traffic: users and the distiller through the watermarked gateway"):
        traffic = _traffic(out, scale, cast, model)
    with stage("control: the same prompts through a gateway without the watermark"):
        control = _control_harvest(out, scale, model)
    with stage("train the rival's student and the control student"):
        students = {name: _train(out, scale, model, name) for name in ("distiller", "control")}
    with stage("audit the gateway log"):
        audit = _audit(out, cast, traffic)
    with stage("trace both students with the key"):
        traces = {n: _trace(out, scale, model, n, say) for n in ("distiller", "control")}
    story = {
        "scale": asdict(scale) | {"quick": quick},
        "cast": {k: v for k, v in cast.items() if k != "keys"},
        "traffic": traffic,
        "price_usd_per_1m": {"input": PRICE_IN, "output": PRICE_OUT},
        "control_harvest": control,
        "students": students,
        "audit": audit,
        "traces": traces,
        "stage_s": stages,
        "total_s": round(sum(stages.values()), 1),
    }
    _write_json(out / "story.json", story)
    from stillroom.demo.report import write_story

    path = write_story(story, out / "story.html")
    say(f"== done in {story['total_s']:.0f} s\nreport: {path}")
    say(_console_hint(out, audit.get("console_case")))
    return story | {"report": str(path)}


def _console_hint(out: Path, case: int | None) -> str:
    """Where a reviewer takes it from here: the distiller's case in the console."""
    db = out / "gateway.sqlite"
    if case is None:
        return (
            f"console: no case holds the distiller; see every case with stillroom console --db {db}"
        )
    return (
        f"console: the distiller's case is /cases/{case}; add a reviewer, then serve it:\n"
        f"  stillroom console reviewers add $USER --role reviewer --db {db}\n"
        f"  stillroom console --db {db}"
    )


class _Timed:
    """Times a stage; a stage that finds its result stored (under 1 s) keeps its old time."""

    def __init__(self, into: dict[str, float], name: str, say: Any, file: Path) -> None:
        self.into, self.name, self.say, self.file = into, name, say, file

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        spent = round(time.perf_counter() - self.start, 1)
        if exc_type is not None:
            return
        if spent >= 1.0 or self.name not in self.into:
            self.into[self.name] = spent
            _write_json(self.file, self.into)
        self.say(f"   ({spent:.0f} s)")


# ---- 1. setup ---------------------------------------------------------------------------


def _setup(out: Path, scale: Scale, task_file: Path) -> dict[str, Any]:
    done = out / "cast.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    from stillroom.serve.accounts import create_account
    from stillroom.serve.db import open_db
    from stillroom.watermark.key import generate_key, save_key

    # Context width 1: a student's next-token habits carry a width-1 green list best
    # (Sander et al. 2024 find radioactivity strongest at small widths).
    save_key(generate_key(context_width=1), out / "watermark-key.json", overwrite=True)
    rows = list({r["headword"]: r for r in _task_rows(task_file)}.values())  # one per word
    rng = random.Random(0)
    rng.shuffle(rows)
    n = scale.distill_prompts
    _write_jsonl(
        out / "distill.jsonl", [{"id": r["id"], "headword": r["headword"]} for r in rows[:n]]
    )
    # The trace asks the suspects what the distiller asked, about words it never saw.
    held_out = rows[n : n + 800]
    _write_jsonl(
        out / "trace.jsonl",
        [{"id": r["id"], "question": DISTILL_TEMPLATE.format(**r)} for r in held_out],
    )
    words = sorted({r["headword"] for r in rows})
    engine = open_db(str(out / "gateway.sqlite"))
    keys: dict[str, str] = {}
    ids: dict[str, str] = {}
    names = [f"user-{i:02d}" for i in range(scale.benign_users)]
    distillers = [f"nimbus-{i + 1}" for i in range(scale.distiller_accounts)]
    for name in names + distillers:
        account, key = create_account(engine, name)
        keys[name], ids[account.id] = key.key, name
    control_engine = open_db(str(out / "control-gateway.sqlite"))
    _, control_key = create_account(control_engine, "control")
    keys["control"] = control_key.key
    cast = {"benign": names, "distiller": distillers, "ids": ids, "keys": keys, "words": words}
    _write_json(done, cast, private=True)
    return cast


def _task_rows(task_file: Path) -> list[dict[str, Any]]:
    """WordNet nouns (Debian wordnet-base): the distiller asks about their headwords."""
    if not task_file.is_file():
        from stillroom.tasks.wordnet import build_wordnet_task

        task_file = build_wordnet_task(task_file.parent, per_class=200)
    return [json.loads(line) for _, line in jsonl_lines(task_file.read_text(encoding="utf-8"))]


# ---- 2. traffic -------------------------------------------------------------------------


def _harvest_config(out: Path, name: str, url: str, scale: Scale, model: str) -> Any:
    from stillroom.config import validate_config

    raw = {
        "name": name,
        "runs_dir": str(out),
        "prompts": {"path": str(out / "distill.jsonl"), "template": DISTILL_TEMPLATE,
                    "id_field": "id"},
        "teacher": {"kind": "api", "base_url": url, "model": model, "endpoint": "chat",
                    "concurrency": 32},
        "generation": {"max_tokens": scale.max_tokens, "temperature": 1.0, "seed": 0},
        "split": {"train": 0.9, "validation": 0.1, "test": 0.0, "seed": 0},
        "cost": {"input_per_1m": PRICE_IN, "output_per_1m": PRICE_OUT},
        "train": {"objective": "sequence", "alpha": 1.0, "precision": "bf16",
                  "student": {"init": "shrink", "path": str(_open_weights(model)),
                              "keep_every": 6, "trim_vocab": True},
                  "max_steps": scale.train_steps, "batch_tokens": 4096, "lr": 5e-4,
                  "warmup_steps": 10, "eval_every": 50, "checkpoint_every": 50,
                  "early_stopping_patience": None},
    }  # fmt: skip
    return validate_config(raw, f"stillroom demo ({name})")


def _open_weights(model: str) -> Path:
    """The distiller has no access to the API's weights; it cuts its student from an open
    model. Gemma 3 270M's weights are public, so here that open model is the same one."""
    from stillroom.runtime.gemma import DEFAULT_TEACHER_ALIASES, default_teacher_dir

    return default_teacher_dir() if model in DEFAULT_TEACHER_ALIASES else Path(model)


def _traffic(out: Path, scale: Scale, cast: dict[str, Any], model: str) -> dict[str, Any]:
    done = out / "traffic.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    from stillroom.demo.traffic import plan_users, run_users

    key_file = out / "watermark-key.json"
    with _gateway(out / "gateway.sqlite", key_file, model) as url:
        users = plan_users([(n, cast["keys"][n]) for n in cast["benign"]],
                           *scale.benign_requests, seed=0)  # fmt: skip
        cfg = _harvest_config(out, "distiller", url, scale, model)
        # Spread the users' requests over about as long as the harvest takes.
        span = scale.distill_prompts / scale.harvest_rate
        result: dict[str, Any] = {}
        worker = threading.Thread(
            target=_distill, args=(cfg, [cast["keys"][d] for d in cast["distiller"]], result)
        )
        worker.start()
        statuses = asyncio.run(run_users(url, model, users, cast["words"], span, seed=0))
        worker.join()
        if "error" in result:
            raise result["error"]
    harvest = result["harvest"]
    traffic = {
        "benign_requests": sum(u.requests for u in users),
        "benign_statuses": statuses,
        "distiller": {k: harvest[k] for k in ("ok", "errors", "prompt_tokens",
                                               "completion_tokens", "run_total_usd",
                                               "elapsed_s", "planned")},
    }  # fmt: skip
    _write_json(done, traffic)
    return traffic


def _distill(cfg: Any, keys: list[str], result: dict[str, Any]) -> None:
    """The distiller's harvest, its calls dealt over its accounts (runs in a thread)."""
    from stillroom.demo.traffic import RotatingTeacher
    from stillroom.harvest.runner import harvest

    try:
        # One small cloud block for all its accounts; one scripted client.
        teachers = [_api_teacher(cfg, k, f"198.51.100.{10 + i}") for i, k in enumerate(keys)]
        result["harvest"] = asdict(
            harvest(cfg, teacher=RotatingTeacher(teachers), show_progress=True)
        )
    except Exception as e:  # handed to the main thread, which raises it
        result["error"] = e


def _api_teacher(cfg: Any, key: str, address: str) -> Any:
    from stillroom.demo.traffic import client_for
    from stillroom.teacher_config import ApiTeacherConfig
    from stillroom.teachers.openai_compat import OpenAITeacher

    api = cfg.teacher
    if not isinstance(api, ApiTeacherConfig) or api.base_url is None:
        raise TypeError("the distiller harvests through the gateway: teacher.kind api, base_url")
    client = client_for(api.base_url, key, address, "python-httpx/0.27.0")
    return OpenAITeacher(api, client=client)


@contextmanager
def _gateway(db: Path, key_file: Path | None, model: str) -> Iterator[str]:
    """`stillroom serve` with the default teacher on a free port, until the block ends."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "stillroom", "serve", "--model", model, "--db", str(db),
           "--port", str(port), "--dtype", "bfloat16", "--model-threads",
           str(os.cpu_count() or 2), "--max-tokens", "64"]  # fmt: skip
    if key_file is not None:
        cmd += ["--watermark-key-file", str(key_file)]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900  # a first run converts the model
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                    raise StillroomError(f"the gateway did not start: {err[-2000:]}") from None
                time.sleep(0.5)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- 3. control harvest -------------------------------------------------------------------


def _control_harvest(out: Path, scale: Scale, model: str) -> dict[str, Any]:
    done = out / "control-harvest.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    from stillroom.harvest.runner import harvest

    cast = json.loads((out / "cast.json").read_text())
    with _gateway(out / "control-gateway.sqlite", None, model) as url:
        cfg = _harvest_config(out, "control", url, scale, model)
        teacher = _api_teacher(cfg, cast["keys"]["control"], "198.51.100.200")
        result = asdict(harvest(cfg, teacher=teacher, show_progress=True))
    summary = {k: result[k] for k in ("ok", "errors", "completion_tokens", "elapsed_s")}
    _write_json(done, summary)
    return summary


# ---- 4. students --------------------------------------------------------------------------


def _train(out: Path, scale: Scale, model: str, name: str) -> dict[str, Any]:
    done = out / name / "train_summary.json"
    if not done.is_file():
        from stillroom.train.trainer import train

        train(_harvest_config(out, name, "http://unused/v1", scale, model), quiet=True)
    summary = json.loads(done.read_text())
    loss = summary.get("final_train_loss")
    return {
        "steps": summary.get("steps"),
        "final_train_loss": None if loss is None else round(loss, 3),
        "best_val": {k: round(v, 3) for k, v in (summary.get("best_val") or {}).items()},
        "elapsed_s": summary.get("elapsed_s"),
        "student": summary.get("student"),
        "student_dir": summary.get("student_dir"),
    }


# ---- 5. audit -----------------------------------------------------------------------------


def _audit(out: Path, cast: dict[str, Any], traffic: dict[str, Any]) -> dict[str, Any]:
    done = out / "audit.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    import sqlalchemy as sa

    from stillroom.audit.run import audit
    from stillroom.serve.db import open_db, requests

    db = str(out / "gateway.sqlite")
    quiet = lambda _m: None  # noqa: E731
    names: dict[str, str] = cast["ids"]
    with open_db(db).connect() as conn:
        logged = conn.execute(
            sa.select(requests.c.created_at, requests.c.account_id).order_by(requests.c.created_at)
        ).all()
        times = [t for t, _ in logged]
        per_account: dict[str, int] = dict(
            conn.execute(
                sa.select(requests.c.account_id, sa.func.count()).group_by(requests.c.account_id)
            ).all()
        )
    final = audit(db, fpr=FPR, min_requests=MIN_REQUESTS, log=quiet, record=True)
    ranked = sorted(final.scores.items(), key=lambda kv: -kv[1])
    flagged = sorted(final.flagged_accounts())
    timeline = _audit_timeline(db, times, names)
    t0 = times[0]
    result = {
        "fpr": FPR,
        "min_requests": MIN_REQUESTS,
        "threshold": final.threshold,
        # Units are accounts, or actors: accounts the audit joined as one (shared address,
        # template, timing...); each is scored once.
        "units": [
            _unit(final.measured.units[u]["members"], score, names, per_account)
            for u, score in ranked
        ],
        "flagged": [names.get(a, a) for a in flagged],
        "evidence": [
            {
                "accounts": [names.get(a, a) for a in f["accounts"]],
                "score": round(f["score"], 3),
                "evidence": f["evidence"],
            }
            for f in final.flagged
        ],
        "timeline": timeline,
        "console_case": _distiller_case(db, final.flagged, names),
        # Each logged request: seconds since the first, and who sent it (for the figure).
        "requests": [
            [round(t - t0, 2), "distiller" if names.get(a, "").startswith("nimbus") else "benign"]
            for t, a in logged
        ],
    }
    _write_json(done, result)
    return result


def _distiller_case(db: str, flagged: list[Any], names: dict[str, str]) -> int | None:
    """The console's case of the unit holding the distiller's accounts (stored by the audit)."""
    from stillroom.audit.runs_store import case_of
    from stillroom.serve.db import open_db

    for f in flagged:
        if any(names.get(a, "").startswith("nimbus") for a in f["accounts"]):
            engine = open_db(db, migrate=False)
            try:
                return case_of(engine, f["unit"])
            finally:
                engine.dispose()
    return None


def _audit_timeline(db: str, times: list[float], names: dict[str, str]) -> list[dict[str, Any]]:
    """When could it have told? The same audit on the log as it stood at earlier moments."""
    from stillroom.audit.run import audit

    timeline = []
    t0, t1 = times[0], times[-1]
    for frac in (0.1, 0.25, 0.5, 0.75):
        until = t0 + frac * (t1 - t0)
        try:
            early = audit(
                db, fpr=FPR, min_requests=MIN_REQUESTS, until=until, log=lambda _m: None
            ).flagged_accounts()
            note = ""
        except InputError as e:  # too few accounts yet to calibrate on
            early, note = set(), str(e)
        timeline.append(
            {
                "fraction_of_traffic_time": frac,
                "requests_logged": sum(1 for t in times if t <= until),
                "note": note,
                "distiller_accounts_flagged": sorted(
                    names[a] for a in early if names.get(a, "").startswith("nimbus")
                ),
                "benign_accounts_flagged": sum(
                    1 for a in early if names.get(a, "").startswith("user")
                ),
            }
        )
    return timeline


def _unit(
    members: list[str], score: float, names: dict[str, str], per_account: dict[str, int]
) -> dict[str, Any]:
    """One scored unit (an account, or accounts the audit joined as one actor)."""
    who = [names.get(a, a) for a in members]
    return {
        "accounts": who,
        "score": round(score, 3),
        "requests": sum(per_account.get(a, 0) for a in members),
        "role": "distiller" if any(n.startswith("nimbus") for n in who) else "benign",
    }


# ---- 6. trace -----------------------------------------------------------------------------


def _trace(out: Path, scale: Scale, model: str, name: str, say: Any) -> dict[str, Any]:
    done = out / f"trace-{name}.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    from stillroom.trace.options import TraceOptions
    from stillroom.trace.run import run_trace

    # the same call `stillroom trace` makes: radioactivity of the student's own answers
    options = TraceOptions.parse(
        suspect=str(out / name / "student"),
        key_file=out / "watermark-key.json",
        prompts=out / "trace.jsonl",
        prompt_field="question",
        tokenizer=model,
        budget=scale.trace_budget,
        target_p=1e-6,
        max_tokens=scale.max_tokens,
        probes=False,
    )
    found = run_trace(options, progress=lambda line: say(f"  {name}:{line}")).radioactivity
    assert found is not None
    _write_json(done, found)
    return found


# ---- files --------------------------------------------------------------------------------


def _write_json(path: Path, data: Any, *, private: bool = False) -> None:
    # private: the cast holds API keys, so the file is 0600 from its first byte
    write_atomic(path, json.dumps(data, indent=2, default=str), private=private)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
