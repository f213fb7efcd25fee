"""One readable training loop: a student from a harvest store.

    stillroom train CONFIG [--resume]

Reads `runs/<name>/harvest.sqlite` as a stream, builds (or resumes) the student, trains it
with the configured objective, and saves `runs/<name>/student/`, a folder that
`AutoModelForCausalLM.from_pretrained` loads as is. Checkpoints land in
`runs/<name>/checkpoints/step-NNNNNN/` every `checkpoint_every` steps; `--resume` continues
from the newest with the same data order, so the loss curve carries on where it stopped.

Runs under `accelerate launch` / `torchrun` on several GPUs unchanged: the Accelerator moves
model and batches, each process takes every world_size-th batch, and only the main process
writes checkpoints and logs.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from stillroom.config import HarvestConfig, TrainSection, dump_config
from stillroom.errors import StoreError
from stillroom.harvest.store import RunStore
from stillroom.reportkit.files import atomic_file, write_atomic
from stillroom.train.data import (
    AnswerEnd,
    Batch,
    Example,
    LabelExample,
    TeacherToStudent,
    collate,
    collate_labels,
    is_empty_answer,
    iter_batches,
    iter_examples,
    iter_label_examples,
)
from stillroom.train.labels import label_token_ids, labels_eval, labels_loss
from stillroom.train.losses import forward_kl, logit_kd_loss, sequence_kd_loss, topk_buckets
from stillroom.train.on_policy import build_on_policy
from stillroom.train.student_vocab import (
    encode_record,
    gold_answer_text,
    harvest_text_ids,
    harvest_token_ids,
    student_prompt_ids,
    task_token_ids,
    teacher_folder,
)
from stillroom.train.students import Student, build_student, load_student, save_student

STATE_FILE = "trainer_state.pt"


@dataclass
class TrainResult:
    run_dir: str
    student_dir: str
    steps: int
    epochs_started: int
    stopped: str  # max_steps | early_stopping | epochs
    final_train_loss: float | None
    best_val: dict[str, float] | None
    tokens_per_s: float
    target_tokens: int
    elapsed_s: float
    student: dict[str, Any] = field(default_factory=dict)
    # on_policy: batches the student wrote, and the teacher's scoring calls this run made
    # (paid) or read back from the store (reused).
    on_policy: dict[str, int] | None = None


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch already consumed
    best_val: float = math.inf
    bad_evals: int = 0
    last_val: dict[str, float] | None = None


class Trainer:
    def __init__(
        self,
        cfg: HarvestConfig,
        *,
        resume: bool = False,
        quiet: bool = False,
        out_dir: Path | None = None,
    ) -> None:
        from accelerate import Accelerator

        self.cfg = cfg
        self.tc: TrainSection = cfg.train
        self.quiet = quiet
        # Outputs (checkpoints, logs, student) go to out_dir; the harvest is the run's.
        self.run_dir = out_dir or cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.store = RunStore.open_run(cfg.run_dir)
        torch.manual_seed(self.tc.seed)
        if self.tc.threads:
            torch.set_num_threads(self.tc.threads)
        self.accel = Accelerator(
            gradient_accumulation_steps=self.tc.grad_accum,
            cpu=_no_gpu(),
        )
        self.state = _State()
        latest = latest_checkpoint(self.ckpt_dir) if resume else None
        if resume and latest is None:
            _log("no checkpoint to resume from; starting fresh")
        self.student = load_student(latest) if latest else self._new_student()
        self.mapping = TeacherToStudent(
            self.student.teacher_to_student(), self.student.to_teacher is None
        )
        self.pad_id = _pad_id(self.student)
        self.label_ids = (
            label_token_ids(self.student.tokenizer, cfg.task.candidates)
            if cfg.task.kind == "classify"
            else torch.zeros(0, dtype=torch.long)
        )
        model = self.student.model
        self.optimizer = torch.optim.AdamW(
            self._trainable(model), lr=self.tc.lr, weight_decay=self.tc.weight_decay,
            betas=(0.9, 0.95),
        )  # fmt: skip
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.model, self.optimizer = self.accel.prepare(model, self.optimizer)
        if latest:
            self._restore(latest)
        self.on_policy = (
            build_on_policy(cfg, self.student, self.mapping, self.pad_id, self.store)
            if self.tc.objective == "on_policy"
            else None
        )
        self._parts: dict[str, torch.Tensor] = {}
        self._last_loss: float | None = None
        self._tokens = self._targets = 0
        self._window: tuple[float, int] = (time.perf_counter(), 0)
        self.log_path = self.run_dir / "train_log.jsonl"
        if not resume and self.accel.is_main_process:
            self.log_path.unlink(missing_ok=True)

    # --- setup --------------------------------------------------------------------------

    def _trainable(self, model: Any) -> list[torch.nn.Parameter]:
        """Training mode, and the parameters the optimizer moves."""
        model.train()
        if self.tc.student.freeze_embeddings:
            # tied models share this tensor with the output layer, so both stay fixed
            model.get_input_embeddings().weight.requires_grad_(False)
        return [p for p in model.parameters() if p.requires_grad]

    def _new_student(self) -> Student:
        teacher_dir = teacher_folder(self.cfg)
        keep = None
        if self.tc.student.trim_vocab:
            keep = harvest_token_ids(self.store, self.tc.student.vocab_top_k)
            keep |= task_token_ids(self.cfg, teacher_dir, self.store)
            if not self.cfg.teacher.is_local:  # API records carry text, not our ids
                keep |= harvest_text_ids(self.store, teacher_dir)
        student = build_student(self.tc.student, teacher_dir, keep)
        _log(
            f"student: {student.params_student:,} parameters "
            f"(teacher {student.params_teacher:,}, {student.describe()['params_ratio']:.1%}), "
            f"vocabulary {student.vocab_student:,} of {student.vocab_teacher:,}"
        )
        return student

    def _lr_factor(self, step: int) -> float:
        """Linear warmup, then cosine decay to 10% at max_steps."""
        warm = self.tc.warmup_steps
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, self.tc.max_steps - warm))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    def _examples(self, split: str) -> Iterator[Example]:
        # on_policy's stored-answer batches use the teacher's top-k when the harvest has it.
        need = self.tc.objective == "logits" or (
            self.tc.objective == "on_policy" and self._has_signals
        )
        return iter_examples(
            self.store,
            split,
            mapping=self.mapping,
            encode=self._encode,
            max_len=self.tc.max_len,
            need_signals=need if split == "train" else self._has_signals,
            student_prompt=self._student_prompt if self.cfg.task.student_template else None,
            end=self._answer_end,
            gold_answer=self._gold_answer if self.tc.targets == "gold" else None,
        )

    def _gold_answer(
        self, fields: dict[str, Any], teacher_text: str, where: str
    ) -> list[int] | None:
        """The gold text as an answer: spaced as the teacher's answer starts, then the end
        the teacher writes (the stop string, else EOS), so the student learns to stop. None
        for a row without gold (a transfer-set prompt): the baseline learns only labelled
        rows."""
        answer = gold_answer_text(fields, self.cfg.task.gold_field or "", teacher_text)
        if answer is None:
            return None
        tok = self.student.tokenizer
        ids = list(tok(answer, add_special_tokens=False)["input_ids"])
        if self._answer_end is not None:
            return ids + list(self._answer_end.stop_ids)
        return ids + ([tok.eos_token_id] if tok.eos_token_id is not None else [])

    @functools.cached_property
    def _answer_end(self) -> AnswerEnd | None:
        """With one stop string, a local teacher's answers cut at it get it back (AnswerEnd).
        With several, the stored answer does not say which one ended it; an API's answer
        may have lost its final EOS too, so "stop" does not say a string ended it."""
        stops = self.cfg.generation.stop
        if len(stops) != 1 or not self.cfg.teacher.is_local:
            return None
        from stillroom.runtime.loading import eos_ids

        tok = self.student.tokenizer
        ids = tuple(int(i) for i in tok(stops[0], add_special_tokens=False)["input_ids"])
        return AnswerEnd(ids, eos_ids(self.student.model, tok))

    def _student_prompt(self, fields: dict[str, Any], where: str) -> list[int]:
        template = self.cfg.task.student_template or ""
        return student_prompt_ids(self.student.tokenizer, template, fields, where)

    @functools.cached_property
    def _has_signals(self) -> bool:
        """Whether the harvest holds teacher ids and top-k (asked once, not per evaluation)."""
        for rec in self.store.iter_records():
            if not is_empty_answer(rec):  # an empty answer has no top-k to show
                return rec["topk"] is not None and rec["token_ids"] is not None
        return False

    def _encode(
        self, request: dict[str, Any], text: str, finish: str | None
    ) -> tuple[list[int], list[int]]:
        return encode_record(self.student.tokenizer, request, text, finish)

    def _batches(self, split: str, epoch: int, shuffle: bool) -> Iterator[Any]:
        if self.tc.objective == "labels":
            return iter_batches(
                lambda: self._label_examples(split),
                lambda group: collate_labels(group, self.pad_id),
                max_batch_tokens=self.tc.batch_tokens,
                seed=self.tc.seed,
                epoch=epoch,
                shuffle=shuffle,
            )
        return iter_batches(
            lambda: self._examples(split),
            lambda group: collate(group, self.mapping, self.pad_id),
            max_batch_tokens=self.tc.batch_tokens,
            seed=self.tc.seed,
            epoch=epoch,
            shuffle=shuffle,
        )

    def _label_examples(self, split: str) -> Iterator[LabelExample]:
        task, tok = self.cfg.task, self.student.tokenizer
        return iter_label_examples(
            self.store,
            split,
            encode=lambda text: list(tok(text)["input_ids"]),
            template=task.student_input or "{text}",
            labels=task.labels,
            gold_field=task.gold_field,
            max_len=self.tc.max_len,
            gold_only=self.tc.alpha == 0.0,  # the gold-only baseline: transfer rows teach nothing
        )

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> TrainResult:
        tc, st = self.tc, self.state
        started = time.perf_counter()
        self._tokens = self._targets = 0
        self._window = (time.perf_counter(), 0)
        stopped = "max_steps"
        while st.step < tc.max_steps:
            if tc.epochs is not None and st.epoch >= tc.epochs:
                stopped = "epochs"
                break
            stopped = self._epoch()
            if stopped == "early_stopping" or st.step >= tc.max_steps:
                break
            st.epoch += 1
            st.batch_in_epoch = 0
        if st.last_val is None or (tc.eval_every and st.step % tc.eval_every):
            self._log_row({"step": st.step, "epoch": st.epoch, **self._evaluate()})
        elapsed = time.perf_counter() - started
        student_dir = self.run_dir / "student"
        if self.accel.is_main_process:
            self.student.model = self.accel.unwrap_model(self.model)
            save_student(self.student, student_dir)
        self.store.close()
        return TrainResult(
            run_dir=str(self.run_dir),
            student_dir=str(student_dir),
            steps=st.step,
            epochs_started=st.epoch + 1,
            stopped=stopped,
            final_train_loss=self._last_loss,
            best_val=st.last_val,
            tokens_per_s=self._tokens / max(elapsed, 1e-9),
            target_tokens=self._targets,
            elapsed_s=elapsed,
            student=self.student.describe(),
            on_policy=self.on_policy.counts() if self.on_policy else None,
        )

    def _epoch(self) -> str:
        """One pass over the train split (or the rest of it, after a resume)."""
        st, accel = self.state, self.accel
        seen = False
        for i, batch in enumerate(self._batches("train", st.epoch, shuffle=True)):
            # Skip batches consumed before the checkpoint, and other processes' batches.
            if i < st.batch_in_epoch or i % accel.num_processes != accel.process_index:
                continue
            seen = True
            st.batch_in_epoch = i + 1
            own = self.on_policy is not None and self.on_policy.chooses(st.epoch, i)
            if own:
                assert self.on_policy is not None
                batch = self.on_policy.batch(self.accel.unwrap_model(self.model), batch,
                                             st.epoch, i)  # fmt: skip
            if self._micro_step(batch, own) and self._after_step() == "early_stopping":
                return "early_stopping"
            if st.step >= self.tc.max_steps:
                return "max_steps"
        if not seen and st.batch_in_epoch == 0:
            raise StoreError(
                f"{self.store.path}: no training examples in the train split; harvest more "
                "prompts, or check split.train"
                + ("; train.targets: gold learns only rows whose task.gold_field is filled"
                   if self.tc.targets == "gold" else "")
            )  # fmt: skip
        return "epoch_done"

    def _micro_step(self, batch: Batch, own: bool = False) -> bool:
        """Forward and backward one batch (`own`: the student's answers); True when it
        completed an optimizer step."""
        with self.accel.accumulate(self.model):
            with self._autocast():
                self._parts = self._loss(batch, own)
            self.accel.backward(self._parts["loss"])
            if self.accel.sync_gradients:
                self.accel.clip_grad_norm_(self.model.parameters(), self.tc.max_grad_norm)
            self.optimizer.step()
            if self.accel.sync_gradients:
                self.scheduler.step()
            self.optimizer.zero_grad()
        self._tokens += batch.n_tokens
        self._targets += batch.n_targets
        self._window = (self._window[0], self._window[1] + batch.n_tokens)
        return bool(self.accel.sync_gradients)

    def _after_step(self) -> str:
        """Log the step; evaluate and checkpoint when due."""
        st, tc = self.state, self.tc
        st.step += 1
        self._last_loss = float(self._parts["loss"].detach())
        row: dict[str, Any] = {"step": st.step, "epoch": st.epoch}
        row |= {k: float(v.detach()) for k, v in self._parts.items()}
        row["lr"] = self.scheduler.get_last_lr()[0]
        if self.on_policy is not None:
            row |= self.on_policy.counts()
        now = time.perf_counter()
        row["tokens_per_s"] = self._window[1] / max(now - self._window[0], 1e-9)
        self._window = (now, 0)
        outcome = "continue"
        if tc.eval_every and st.step % tc.eval_every == 0:
            row |= self._evaluate()
            if self._early_stop():
                outcome = "early_stopping"
        self._log_row(row)
        if tc.checkpoint_every and st.step % tc.checkpoint_every == 0:
            self.save_checkpoint()
        return outcome

    def _autocast(self) -> torch.autocast:
        # Our own autocast rather than Accelerator(mixed_precision=...): that setting is
        # process-wide state, so two configs trained in one process could not differ.
        return torch.autocast(
            self.accel.device.type, dtype=torch.bfloat16, enabled=self.tc.precision == "bf16"
        )

    def _loss(self, batch: Any, own: bool = False) -> dict[str, torch.Tensor]:
        if self.tc.objective == "labels":
            return labels_loss(
                self.model,
                batch,
                self.label_ids,
                self.pad_id,
                temperature=self.tc.temperature,
                alpha=self.tc.alpha,
            )
        device = self.accel.device
        # Logits only for the span of positions that predict completion tokens: the output
        # layer is most of a small student's compute.
        scored = batch.loss_mask.any(0).nonzero()[:, 0]
        span = slice(int(scored[0]), int(scored[-1]) + 1)
        out = self.model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            logits_to_keep=torch.arange(span.start, span.stop, device=device),
        )
        logits = out.logits.flatten(0, 1)  # (B*S, V)
        mask = batch.loss_mask[:, span].to(device).flatten()  # (B*S,)
        targets = batch.targets[:, span].to(device).flatten()
        if self.tc.objective == "sequence" or batch.topk_ids is None:
            return {"loss": sequence_kd_loss(logits, targets, mask)}
        assert batch.topk_ids is not None and batch.topk_logprobs is not None
        rest = batch.topk_rest
        parts = logit_kd_loss(
            logits,
            batch.topk_ids[:, span].to(device).flatten(0, 1),
            batch.topk_logprobs[:, span].to(device).flatten(0, 1),
            rest[:, span].to(device).flatten() if rest is not None else None,
            targets,
            mask,
            divergence=self.tc.divergence,
            beta=self.tc.beta,
            temperature=self.tc.temperature,
            alpha=1.0 if own else self.tc.alpha,  # no hard-label term on the student's own
        )
        result = {"loss": parts.total, "kd": parts.kd}
        if parts.ce is not None:
            result["ce"] = parts.ce
        return result

    def evaluate_student(self, student: Student) -> dict[str, float]:
        """This run's validation figures for another, trained student: the same code as
        training's own validation, so students of different harvests compare on one."""
        self.student, self.model = student, student.model
        self.mapping = TeacherToStudent(student.teacher_to_student(), student.to_teacher is None)
        self.pad_id = _pad_id(student)
        return self._evaluate()

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        """Validation: CE on the teacher's tokens, and KL to the teacher's top-k when stored."""
        self.model.eval()
        if self.tc.objective == "labels":
            batches = itertools.islice(
                self._batches("validation", 0, shuffle=False), self.tc.eval_batches
            )
            val = labels_eval(self.model, batches, self.label_ids, self.pad_id)
            self.model.train()
            self.state.last_val = val or None
            return val
        ce_sum = kl_sum = 0.0
        n = n_kl = 0
        for i, batch in enumerate(self._batches("validation", 0, shuffle=False)):
            if self.tc.eval_batches is not None and i >= self.tc.eval_batches:
                break
            mask = batch.loss_mask
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            logits = logits.logits[mask].float()  # (N, V)
            targets = batch.targets[mask]
            ce_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            n += len(targets)
            if batch.topk_ids is not None and batch.topk_logprobs is not None:
                q, p = topk_buckets(
                    logits,
                    batch.topk_ids[mask],
                    batch.topk_logprobs[mask],
                    batch.topk_rest[mask] if batch.topk_rest is not None else None,
                )
                kl_sum += float(forward_kl(q, p).sum())
                n_kl += len(targets)
        self.model.train()
        if n == 0:
            return {}
        val = {"val_ce": ce_sum / n}
        if n_kl:
            val["val_kl"] = kl_sum / n_kl
        self.state.last_val = val
        return val

    def _early_stop(self) -> bool:
        st, patience = self.state, self.tc.early_stopping_patience
        if st.last_val is None:
            return False
        metric = st.last_val.get("val_kl", st.last_val.get("val_ce"))
        if self.tc.objective == "sequence":
            metric = st.last_val.get("val_ce")
        if metric is None:
            return False
        if metric < st.best_val - 1e-4:
            st.best_val, st.bad_evals = metric, 0
            return False
        st.bad_evals += 1
        return patience is not None and st.bad_evals >= patience

    # --- checkpoints and logs --------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        target = self.ckpt_dir / f"step-{self.state.step:06d}"
        if not self.accel.is_main_process:
            return target
        self.student.model = self.accel.unwrap_model(self.model)
        save_student(self.student, target)  # whole or not at all (temp folder, rename)
        state = {
            "trainer": asdict(self.state),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        with atomic_file(target / STATE_FILE) as tmp:
            torch.save(state, tmp)
        for old in sorted(self.ckpt_dir.glob("step-*"))[: -self.tc.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def _restore(self, ckpt: Path) -> None:
        state = torch.load(ckpt / STATE_FILE, weights_only=False)
        self.state = _State(**state["trainer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        _log(f"resumed from {ckpt} at step {self.state.step}")

    def _log_row(self, row: dict[str, Any]) -> None:
        if not self.accel.is_main_process:
            return
        with self.log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if not self.quiet:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            _log(" ".join(f"{k}={v}" for k, v in shown.items()))
        elif "loss" in row and self._progress_due(row["step"]):
            # Quiet (inside `distill`): one short line per tenth of the run, so progress
            # stays visible in a log file or CI output without a line per step.
            val = f" val_accuracy={row['val_accuracy']:.4f}" if "val_accuracy" in row else ""
            _log(
                f"train step {row['step']}/{self.tc.max_steps} "
                f"loss={row['loss']:.4f} {row['tokens_per_s']:.0f} tok/s{val}"
            )

    def _progress_due(self, step: int) -> bool:
        every = max(1, self.tc.max_steps // 10)
        return step % every == 0 or step == self.tc.max_steps


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = [p for p in sorted(ckpt_dir.glob("step-*")) if (p / STATE_FILE).is_file()]
    return done[-1] if done else None


def train(
    cfg: HarvestConfig, *, resume: bool = False, quiet: bool = False, out_dir: Path | None = None
) -> TrainResult:
    """Train a student on the run's harvest; outputs go to `out_dir` (default: the run)."""
    target = out_dir or cfg.run_dir
    target.mkdir(parents=True, exist_ok=True)
    write_atomic(target / "config.yaml", dump_config(cfg))
    result = Trainer(cfg, resume=resume, quiet=quiet, out_dir=out_dir).run()
    out = target / "train_summary.json"
    write_atomic(out, json.dumps(asdict(result), indent=2))
    return result


def _pad_id(student: Student) -> int:
    tok = student.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _no_gpu() -> bool:
    return not torch.cuda.is_available()


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
