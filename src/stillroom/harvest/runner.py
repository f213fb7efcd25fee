"""The harvest: every (prompt, sample) not yet in the store goes to the teacher once.

A fixed pool of workers pulls from one plan, so at most `teacher.concurrency` calls are in
flight. Each finished call is committed before the worker takes the next, which is what
makes a killed run resumable without paying twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stillroom.config import HarvestConfig, dump_config
from stillroom.errors import StoreError, TeacherReplyError
from stillroom.harvest.cost import Budget, worst_case_cost
from stillroom.harvest.preflight import check_task
from stillroom.harvest.progress import HarvestProgress
from stillroom.harvest.prompts import LoadReport, PromptItem, load_prompts
from stillroom.harvest.store import STORE_NAME, CallMeta, RunStore
from stillroom.prices import price_for
from stillroom.reportkit.files import write_atomic
from stillroom.teachers.base import GenerationParams, Teacher, TeacherRequest
from stillroom.teachers.estimates import input_tokens_estimate, output_tokens_upper_bound


@dataclass
class PlannedCall:
    meta: CallMeta
    request: TeacherRequest


@dataclass
class Plan:
    calls: list[PlannedCall]  # still to do, in order
    total: int  # all (prompt, sample) pairs
    stored: int  # already in the store
    report: LoadReport
    duplicates: int = 0  # prompts whose request repeats an earlier one's exactly
    splits: dict[str, str] = field(default_factory=dict)  # every planned key -> its split


@dataclass
class HarvestResult:
    run_dir: str
    planned: int
    already_stored: int
    called: int = 0
    ok: int = 0
    errors: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spent_usd: float = 0.0
    run_total_usd: float = 0.0
    compute_s: float = 0.0
    elapsed_s: float = 0.0
    stopped: str = "done"  # done | limit | budget
    duplicate_requests: int = 0
    skipped_rows: list[str] = field(default_factory=list)
    resplit: int = 0  # stored calls moved to the split the config now gives them
    checks: list[str] = field(default_factory=list)  # notes from the checks before calling


@dataclass
class DryRunEstimate:
    prompts: int
    calls_total: int
    already_stored: int
    calls_to_make: int
    input_tokens_est: int
    output_tokens_max: int
    cost_usd_max: float
    price_per_1m: dict[str, float]
    skipped_rows: list[str]
    checks: list[str] = field(default_factory=list)


def build_plan(
    cfg: HarvestConfig,
    store: RunStore | None,
    *,
    limit: int | None = None,
    skip_bad: bool = False,
    retry_errors: bool = False,
    first: int | None = None,
    loaded: tuple[list[PromptItem], LoadReport] | None = None,
) -> tuple[list[PromptItem], Plan]:
    """The calls still to make: for the `first` N prompts (all by default), at most `limit`.
    `loaded`: the prompts, when the caller has read them already."""
    items, report = loaded or load_prompts(cfg.prompts, cfg.split, skip_bad=skip_bad, first=first)
    done = store.stored_keys(include_errors=not retry_errors) if store else set()
    plan = Plan([], 0, 0, report)
    for call in _all_calls(cfg, items):
        key = call.meta.key
        if key in plan.splits:  # the same request under another prompt id: one call serves both
            plan.duplicates += 1
            continue
        plan.splits[key] = call.meta.split
        plan.total += 1
        if key in done:
            plan.stored += 1
        elif limit is None or len(plan.calls) < limit:
            plan.calls.append(call)
    return items, plan


def _all_calls(cfg: HarvestConfig, items: list[PromptItem]) -> Iterator[PlannedCall]:
    g = cfg.generation
    candidates = cfg.task.candidates if cfg.task.kind == "classify" else ()
    for item in items:
        for s in range(cfg.samples_per_prompt):
            params = GenerationParams(
                max_tokens=g.max_tokens,
                temperature=g.temperature,
                top_p=g.top_p,
                n=g.n,
                # Distinct seeds per sample, so repeated samples are not copies.
                seed=None if g.seed is None else g.seed + s,
                stop=tuple(g.stop),
                top_logprobs=g.top_logprobs,
            )
            req = TeacherRequest(
                item.prompt, item.messages, params, sample_index=s, candidates=candidates
            )
            canonical = req.canonical(cfg.teacher.model)
            meta = CallMeta(
                req.key(cfg.teacher.model), item.id, s, item.split, canonical, item.fields
            )
            yield PlannedCall(meta, req)


def dry_run(
    cfg: HarvestConfig,
    *,
    limit: int | None = None,
    skip_bad: bool = False,
    first: int | None = None,
) -> DryRunEstimate:
    """What a harvest would call and cost, after the same checks a harvest makes first. A
    classification call generates nothing: its estimate is the prompt's tokens alone."""
    loaded = load_prompts(cfg.prompts, cfg.split, skip_bad=skip_bad, first=first)
    notes = check_task(cfg, loaded[0])
    path = cfg.run_dir / "harvest.sqlite"
    store = RunStore(path, create=False) if path.exists() else None
    try:
        items, plan = build_plan(cfg, store, limit=limit, loaded=loaded)
    finally:
        if store:
            store.close()
    price = price_for(cfg.teacher.model, cfg.teacher.kind, cfg.cost)
    return DryRunEstimate(
        prompts=len(items),
        calls_total=plan.total,
        already_stored=plan.stored,
        calls_to_make=len(plan.calls),
        input_tokens_est=sum(input_tokens_estimate(c.request) for c in plan.calls),
        output_tokens_max=sum(output_tokens_upper_bound(c.request) for c in plan.calls),
        cost_usd_max=sum(worst_case_cost(c.request, price) for c in plan.calls),
        price_per_1m={"input": price.input_per_1m, "output": price.output_per_1m},
        skipped_rows=plan.report.skipped,
        checks=notes,
    )


def harvest(
    cfg: HarvestConfig,
    *,
    teacher: Teacher | None = None,
    limit: int | None = None,
    skip_bad: bool = False,
    retry_errors: bool = False,
    show_progress: bool = True,
    first: int | None = None,
) -> HarvestResult:
    """Run a harvest to completion, the limit, or the budget. Safe to rerun at any time.

    `first`: only the first N prompts of the file; `limit`: at most N calls this time. The
    task is checked (`check_task`) before the run folder is touched or a teacher loads.
    """
    loaded = load_prompts(cfg.prompts, cfg.split, skip_bad=skip_bad, first=first)
    local_tokenizer = getattr(teacher, "tokenizer", None) if cfg.teacher.is_local else None
    notes = check_task(cfg, loaded[0], teacher_tokenizer=local_tokenizer)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(run_dir):
        write_atomic(run_dir / "config.yaml", dump_config(cfg))
        store = RunStore.open_run(run_dir, create=True)
        try:
            _, plan = build_plan(cfg, store, limit=limit, retry_errors=retry_errors, loaded=loaded)
            # The config decides splits (split.field, split.seed): stored calls follow it.
            resplit = store.resplit(plan.splits)
            orphaned = store.orphan_reservations()
            spent = store.totals().cost_usd + orphaned
            redo = store.stored_keys() if retry_errors else set()
        finally:
            store.close()
        result = HarvestResult(
            str(run_dir),
            plan.total,
            plan.stored,
            duplicate_requests=plan.duplicates,
            skipped_rows=plan.report.skipped,
            resplit=resplit,
            checks=notes,
        )
        if limit is not None and plan.total - plan.stored > len(plan.calls):
            result.stopped = "limit"
        if plan.calls:
            budget = Budget(cfg.cost.budget_usd, spent)
            budget.check_can_start()
            if teacher is None:
                from stillroom.teachers import make_teacher

                teacher = make_teacher(cfg.teacher)
            asyncio.run(_call_teacher(cfg, teacher, plan, budget, result, redo, show_progress))
        store = RunStore.open_run(run_dir)
        totals = store.totals()
        store.close()
        result.run_total_usd = totals.cost_usd + totals.orphaned_usd
        write_atomic(run_dir / "harvest_summary.json", json.dumps(asdict(result), indent=2))
        return result


async def _call_teacher(
    cfg: HarvestConfig,
    teacher: Teacher,
    plan: Plan,
    budget: Budget,
    result: HarvestResult,
    redo: set[str],
    show_progress: bool,
) -> None:
    started = time.perf_counter()
    store = RunStore(cfg.run_dir / STORE_NAME)
    try:
        with HarvestProgress(len(plan.calls), enabled=show_progress) as progress:
            try:
                await _run_workers(cfg, store, teacher, plan, budget, result, progress, redo)
            finally:
                await teacher.aclose()
    finally:
        store.close()
    result.elapsed_s = time.perf_counter() - started
    result.retries = int(getattr(teacher, "retries", 0))


async def _run_workers(
    cfg: HarvestConfig,
    store: RunStore,
    teacher: Teacher,
    plan: Plan,
    budget: Budget,
    result: HarvestResult,
    progress: HarvestProgress,
    redo: set[str],
) -> None:
    price = price_for(cfg.teacher.model, cfg.teacher.kind, cfg.cost)
    pending = iter(plan.calls)
    # With or without a budget: a killed run's calls in flight may have been billed, and the
    # run total must count them.
    persist_reservations = not price.free
    spent_before = budget.spent

    async def worker() -> None:
        for call in pending:  # a shared iterator: each call is taken by one worker
            if result.stopped == "budget":
                return
            worst = worst_case_cost(call.request, price)
            if not budget.try_reserve(worst):
                result.stopped = "budget"
                return
            if persist_reservations:
                store.reserve(call.meta.key, worst)
            result.called += 1
            replaces = call.meta.key in redo
            try:
                comp = await teacher.complete(call.request)
            except TeacherReplyError as e:
                # Billed or not, we cannot tell: charge the reservation, keep going.
                store.write_error(call.meta, str(e), worst, replaces=replaces)
                budget.settle(worst, worst)
                result.errors += 1
                progress.advance(0, budget.spent, error=True)
                continue
            cost = price.cost(comp.usage.prompt_tokens, comp.usage.completion_tokens)
            store.write_ok(call.meta, comp, cost, replaces=replaces)
            budget.settle(worst, cost)
            result.ok += 1
            result.prompt_tokens += comp.usage.prompt_tokens
            result.completion_tokens += comp.usage.completion_tokens
            result.compute_s += comp.compute_s
            progress.advance(comp.usage.completion_tokens, budget.spent)

    n_workers = max(1, min(teacher.concurrency, len(plan.calls)))
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(n_workers):
                tg.create_task(worker())
    except* Exception as group:
        # Surface the first real error (a fatal status, an unreachable teacher) as itself.
        raise group.exceptions[0] from None
    finally:
        result.spent_usd = budget.spent - spent_before


class _exclusive:
    """One harvest per run folder at a time: a second would double-pay and race the store."""

    def __init__(self, run_dir: Path, wait_s: float = 30.0) -> None:
        self.path = run_dir / ".harvest.lock"
        self.fd = -1
        # A harvest that is just finishing holds the lock for a moment; wait for it rather
        # than fail.
        self.wait_s = wait_s

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise StoreError(
                        f"{self.path.parent}: another harvest is running on this run folder; "
                        "wait for it to finish or stop it"
                    ) from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
