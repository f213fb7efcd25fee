"""Students of one watermarked harvest, built the ways a user outside `stillroom train` would.

A suspect model rarely comes from our trainer: someone harvests an API, then fine-tunes with
a plain PyTorch loop, a LoRA adapter, a cut-down model or a trimmed vocabulary. This script
builds such students from one harvest of the built-in teacher, each beside a control trained
the same way on the unwatermarked teacher's answers to the same prompts, for
`benchmarks/trace_recipes.py` to trace. Nothing here uses `stillroom.train`.

Stages (each skips the work whose output exists, so a rerun resumes):

- harvest (one process per side): a key (gamma 0.25, delta 2, context width 1); chat
  answers of the teacher to WordNet prompts, watermarked ("marked") and not ("plain"), on
  train prompts, plus held-out prompts (disjoint headwords) whose answers are the trace's
  texts: unwatermarked ones for mass mode, watermarked ones for reading mode. `replay`: a
  second watermarked draw of the first train prompts, the served-answer test's twins.
- train: AdamW, batch 8, loss on the answer tokens of the chat exchange, float32. Recipes:
  full (first 4 layers, everything trained), frozen (4 layers, tied embeddings frozen),
  lora (all 18 layers, rank-16 LoRA on attention and MLP, merged before saving), trimmed
  (4 layers, vocabulary cut to the harvest's tokens, with a tokenizer whose ids match).
  `--answers` and `--epochs` set the size; `--side` splits the work between processes.
- check: each student loads as a LocalTeacher and answers a question.

    PYTHONPATH=src .venv/bin/python benchmarks/recipe_students.py harvest marked|plain
    PYTHONPATH=src .venv/bin/python benchmarks/recipe_students.py harvest replay --first 250
    PYTHONPATH=src .venv/bin/python benchmarks/recipe_students.py train [--side marked]
    PYTHONPATH=src .venv/bin/python benchmarks/recipe_students.py check

Outputs under runs/recipes: key.json, harvest/*.jsonl, students/<name>/ (save_pretrained
folders with losses.json) and manifest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OUT = Path("runs/recipes")
WORDNET = Path("examples/data/wordnet-nouns.jsonl")
TEMPLATES = (
    "What is a {h}? Answer in two sentences.",
    "Explain what a {h} is to a child.",
    "Write a short paragraph about {h}.",
    "Give three facts about {h}.",
    "Describe {h} in one sentence.",
    "What is {h} used for, or known for?",
)
TRAIN_HEADWORDS = 1000  # the rest are held out: the trace's texts never share a headword
MAX_TOKENS = 96
SEED = 20


# ---- prompts and harvest ------------------------------------------------------------------


def headwords(path: Path = WORDNET) -> list[str]:
    """Distinct headwords in a fixed shuffled order."""
    if not path.is_file():
        sys.exit(f"{path}: missing; build it with `make {path}`")
    seen: dict[str, None] = {}
    for line in path.read_text().splitlines():
        seen.setdefault(json.loads(line)["headword"], None)
    words = sorted(seen)
    random.Random(SEED).shuffle(words)
    return words


def prompt_sets() -> tuple[list[str], list[str]]:
    """(train prompts: one per train headword; held-out prompts: every template of every
    held-out headword, shuffled)."""
    words = headwords()
    train = [
        TEMPLATES[i % len(TEMPLATES)].format(h=w) for i, w in enumerate(words[:TRAIN_HEADWORDS])
    ]
    held = [t.format(h=w) for w in words[TRAIN_HEADWORDS:] for t in TEMPLATES]
    random.Random(SEED + 1).shuffle(held)
    return train, held


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def harvest_file(
    teacher: Any, path: Path, prompts: Sequence[str], max_tokens: int, *, seed: int = SEED
) -> float:
    """Append the teacher's answers to the `prompts` not yet in `path`; returns seconds."""
    from stillroom.teachers.base import GenerationParams, TeacherRequest

    done = len(read_jsonl(path))
    start = time.perf_counter()
    chunk = 64
    for at in range(done, len(prompts), chunk):
        part = prompts[at : at + chunk]
        requests = [
            TeacherRequest(None, (("user", p),), GenerationParams(max_tokens, 1.0, seed=seed))
            for p in part
        ]
        done_chunk = teacher.generate(requests)
        rows = [
            {"prompt": p, "answer": c.choices[0].text, "finish": c.choices[0].finish_reason}
            for p, c in zip(part, done_chunk, strict=True)
        ]
        with path.open("a") as f:  # a whole chunk at once: a crash loses at most one chunk
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{path.name}: {at + len(part)}/{len(prompts)}", flush=True)
    return time.perf_counter() - start


def get_key() -> Any:
    from stillroom.watermark.key import generate_key, load_key, save_key

    path = OUT / "key.json"
    if not path.is_file():
        save_key(generate_key(gamma=0.25, delta=2.0, context_width=1), path)
    return load_key(path)


def measure(max_tokens: int, batch: int = 32) -> None:
    """Tokens per second of one watermarked batch of train prompts: sizes the harvest."""
    from stillroom.teachers.base import GenerationParams, TeacherRequest
    from stillroom.teachers.local import LocalTeacher

    teacher = LocalTeacher.load("gemma-3-270m", batch_size=batch, watermark=get_key())
    train, _ = prompt_sets()
    requests = [
        TeacherRequest(None, (("user", p),), GenerationParams(max_tokens, 1.0, seed=SEED))
        for p in train[:batch]
    ]
    start = time.perf_counter()
    done = teacher.generate(requests)
    seconds = time.perf_counter() - start
    tokens = sum(c.usage.completion_tokens for c in done)
    print(json.dumps({"batch": batch, "tokens": tokens, "seconds": round(seconds, 1),
                      "tokens_per_s": round(tokens / seconds, 1)}))  # fmt: skip


def harvest(
    side: str, train_n: int, first_n: int, held_n: int, skip_held: int, max_tokens: int
) -> None:
    """One teacher's answers (`side` marked or plain): train prompts for the first students,
    then held-out texts for the trace, then the rest of the train prompts. The two sides
    can run as two processes; held-out prompts `skip_held` onwards keep their texts apart."""
    from stillroom.teachers.local import LocalTeacher

    OUT.mkdir(parents=True, exist_ok=True)
    key = get_key()
    train, held = prompt_sets()
    if skip_held + held_n > len(held):
        sys.exit(f"only {len(held)} held-out prompts; ask for fewer texts")
    teacher = LocalTeacher.load(
        "gemma-3-270m", batch_size=32, watermark=key if side == "marked" else None
    )
    h = OUT / "harvest"
    h.mkdir(exist_ok=True)
    plan = [
        (f"train-{side}.jsonl", train[:first_n]),
        (f"held-{side}.jsonl", held[skip_held : skip_held + held_n]),
        (f"train-{side}.jsonl", train[:train_n]),
    ]
    for name, prompts in plan:
        seconds = harvest_file(teacher, h / name, prompts, max_tokens)
        timing = h / f"{name}.seconds"
        before = float(timing.read_text()) if timing.is_file() else 0.0
        timing.write_text(f"{before + seconds:.1f}\n")


def replay(first_n: int, max_tokens: int) -> None:
    """Fresh twins of the first watermarked train answers: the same teacher, key and prompts
    with another seed. The served-answer test pairs each answer a student may have trained
    on with its twin, which no student saw."""
    from stillroom.teachers.local import LocalTeacher

    teacher = LocalTeacher.load("gemma-3-270m", batch_size=32, watermark=get_key())
    train, _ = prompt_sets()
    path = OUT / "harvest" / "replay-marked.jsonl"
    seconds = harvest_file(teacher, path, train[:first_n], max_tokens, seed=SEED + 1)
    path.with_name(path.name + ".seconds").write_text(f"{seconds:.1f}\n")


# ---- students -----------------------------------------------------------------------------

MAX_LEN = 160
BATCH = 8
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Plan:
    """One student: a recipe trained on `answers` harvested answers for `epochs` epochs."""

    recipe: str  # full | frozen | lora | trimmed
    answers: int
    epochs: int
    marked: bool  # watermarked answers, or the control's
    # Of a marked student's answers, the share that are watermarked; the rest are the
    # unwatermarked answers to the same prompts (a harvest mixed into other data).
    share: float = 1.0

    @property
    def name(self) -> str:
        side = "control" if not self.marked else "marked" if self.share == 1 else "mix"
        mix = "" if side != "mix" else f"{round(100 * self.share)}"
        return f"{self.recipe}-{self.answers}x{self.epochs}-{side}{mix}"

    @property
    def lr(self) -> float:
        return 2e-4 if self.recipe == "lora" else 5e-5


def plans(
    answers: int, epochs: int, recipes: Sequence[str], sides: str, share: float = 1.0
) -> list[Plan]:
    """Each recipe on the watermarked answers, then its control beside it (or one side only,
    so two processes can share the work)."""
    marks = {"both": (True, False), "marked": (True,), "control": (False,)}[sides]
    return [Plan(r, answers, epochs, m, share if m else 1.0) for r in recipes for m in marks]


def training_rows(plan: Plan) -> list[dict[str, Any]]:
    """The plan's answers: marked or plain, or plain with a random `share` of them replaced
    by the marked answer to the same prompt."""
    side = "marked" if plan.marked and plan.share == 1 else "plain"
    rows = read_jsonl(OUT / "harvest" / f"train-{side}.jsonl")[: plan.answers]
    if len(rows) < plan.answers:
        sys.exit(f"{plan.name}: {len(rows)} {side} answers harvested, {plan.answers} needed")
    if plan.marked and plan.share < 1:
        marked = read_jsonl(OUT / "harvest" / "train-marked.jsonl")[: plan.answers]
        swap = random.Random(SEED).sample(range(plan.answers), round(plan.share * plan.answers))
        for i in swap:
            assert rows[i]["prompt"] == marked[i]["prompt"]
            rows[i] = marked[i]
    return rows


def encode(tok: Any, prompt: str, answer: str, stopped: bool) -> tuple[list[int], int]:
    """(ids of the chat exchange, where the answer starts): the answer ends with the turn's
    end only when the teacher stopped by itself, so a cut answer teaches no false ending."""
    head = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(head, add_special_tokens=False)["input_ids"]
    tail = tok(answer, add_special_tokens=False)["input_ids"]
    if stopped:
        tail = [*tail, tok.convert_tokens_to_ids("<end_of_turn>")]
    return (ids + tail)[:MAX_LEN], len(ids)


def cut_layers(lm: Any, layers: int) -> Any:
    """Keep the first `layers` decoder layers (the config follows, so the folder reloads)."""
    import torch

    lm.model.layers = torch.nn.ModuleList(list(lm.model.layers)[:layers])
    lm.config.num_hidden_layers = layers
    if getattr(lm.config, "layer_types", None):
        lm.config.layer_types = lm.config.layer_types[:layers]
    return lm


def answer_loss(lm: Any, ids: Any, mask: Any, starts: Sequence[int]) -> Any:
    """Mean cross-entropy on answer tokens; the output layer runs only where one is predicted
    (the same loss as full logits with prompt labels masked, at a fraction of the cost)."""
    import torch

    hidden = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
    rows: list[int] = []
    cols: list[int] = []
    for r, start in enumerate(starts):
        n = int(mask[r].sum())
        cols.extend(range(start - 1, n - 1))  # position i predicts token i + 1
        rows.extend([r] * (n - start))
    r_t, c_t = torch.tensor(rows), torch.tensor(cols)
    logits = lm.lm_head(hidden[r_t, c_t])
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits.float(), ids[r_t, c_t + 1])


def batches(examples: list[tuple[list[int], int]], pad: int, seed: int) -> Any:
    """Shuffled right-padded batches of (ids, mask, answer starts)."""
    import torch

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    for at in range(0, len(order), BATCH):
        part = [examples[i] for i in order[at : at + BATCH]]
        width = max(len(x) for x, _ in part)
        ids = torch.full((len(part), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (x, _) in enumerate(part):
            ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        yield ids, mask, [start for _, start in part]


def build(plan: Plan, rows: list[dict[str, Any]]) -> tuple[Any, Any, Any]:
    """(model to save, the module to train, tokenizer) for a recipe, before training."""
    from stillroom.runtime.loading import load_lm

    lm, tok, _ = load_lm("gemma-3-270m")
    if plan.recipe == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules=list(LORA_TARGETS)
        )
        peft_lm = get_peft_model(lm, config)
        return peft_lm, peft_lm.get_base_model(), tok
    lm = cut_layers(lm, 4)
    if plan.recipe == "trimmed":
        lm, tok = trim_vocab(lm, tok, rows)
    if plan.recipe == "frozen":
        lm.model.embed_tokens.weight.requires_grad_(False)  # tied: the output layer too
    return lm, lm, tok


def trim_vocab(lm: Any, tok: Any, rows: list[dict[str, Any]]) -> tuple[Any, Any]:
    """The model with only the tokens its harvest uses, and a tokenizer whose ids match."""
    import torch

    trimmed, old = trim_tokenizer(tok, rows)
    names = {i: t for t, i in tok.get_vocab().items()}
    new = trimmed.get_vocab()
    ids = torch.tensor(old)
    emb = lm.model.embed_tokens
    emb.weight = torch.nn.Parameter(emb.weight.data[ids].clone())
    emb.num_embeddings = len(old)
    emb.padding_idx = trimmed.pad_token_id
    lm.lm_head.weight = emb.weight  # still tied
    lm.config.vocab_size = len(old)
    for config in (lm.config, lm.generation_config):
        for field in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(config, field, None)
            if isinstance(value, int):
                setattr(config, field, new[names[value]])
            elif isinstance(value, list):
                setattr(config, field, [new[names[v]] for v in value])
    return lm, trimmed


def trim_tokenizer(tok: Any, rows: list[dict[str, Any]]) -> tuple[Any, list[int]]:
    """(a tokenizer of only the tokens the harvest uses, the teacher id of each of its ids).

    Kept: every token of the harvest's chat exchanges, the specials a chat needs, the 256 byte
    tokens any text can fall back to, the non-special added tokens (runs of whitespace, which
    split text before BPE), and every part of every merge that builds a kept token. With all
    the merges among kept tokens, the harvest encodes exactly as before; other text breaks
    into smaller kept pieces. Ids are renumbered in the teacher's order.
    """
    import tempfile

    from transformers import AutoTokenizer

    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    names = {i: t for t, i in vocab.items()}
    keep = {f"<0x{b:02X}>" for b in range(256)}
    keep |= {"<start_of_turn>", "<end_of_turn>", *tok.all_special_tokens}
    keep |= {a["content"] for a in spec["added_tokens"] if not a["special"]}
    for r in rows:
        keep.update(names[i] for i in encode(tok, r["prompt"], r["answer"], True)[0])
    merges = [
        tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]
    ]
    builds: dict[str, list[tuple[str, str]]] = {}
    for a, b in merges:
        builds.setdefault(a + b, []).append((a, b))
    stack = list(keep)
    while stack:
        for pair in builds.get(stack.pop(), ()):
            fresh = [part for part in pair if part not in keep]
            keep.update(fresh)
            stack.extend(fresh)
    old = sorted(vocab[t] for t in keep if t in vocab)
    new = {names[i]: j for j, i in enumerate(old)}
    spec["model"]["vocab"] = new
    spec["model"]["merges"] = [[a, b] for a, b in merges if a in new and b in new and a + b in new]
    spec["added_tokens"] = [
        {**a, "id": new[a["content"]]} for a in spec["added_tokens"] if a["content"] in new
    ]
    for special in (spec.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [new[t] for t in special["tokens"]]
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        Path(tmp, "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
        trimmed = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    return trimmed, old


def train_one(plan: Plan, folder: Path) -> dict[str, Any]:
    """Train and save one student; returns its manifest entry."""
    import torch

    rows = training_rows(plan)
    torch.manual_seed(SEED)
    model, lm, tok = build(plan, rows)
    examples = [encode(tok, r["prompt"], r["answer"], r["finish"] == "stop") for r in rows]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=plan.lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(plan.epochs):
        for ids, mask, starts in batches(examples, pad, SEED + epoch):
            loss = answer_loss(lm, ids, mask, starts)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) % 5 == 1:
                print(f"{plan.name} step {len(losses)} loss {losses[-1]:.3f}", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    if plan.recipe == "lora":
        model = model.merge_and_unload()
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "losses.json").write_text(json.dumps(losses) + "\n")
    tmp.rename(folder)  # a folder exists only once the student is whole
    tail = losses[-5:]
    return {
        "name": plan.name,
        "folder": str(folder),
        **asdict(plan),
        "steps": len(losses),
        "lr": plan.lr,
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),  # mean of the last five steps
        "train_s": round(seconds, 1),
        "trainable_params": sum(p.numel() for p in params),
        "vocab": int(lm.get_output_embeddings().weight.shape[0]),
    }


def train(students: Sequence[Plan]) -> None:
    folder = OUT / "students"
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = OUT / "manifest.json"
    for plan in students:
        if (folder / plan.name).is_dir():
            continue
        entry = train_one(plan, folder / plan.name)
        print(json.dumps(entry), flush=True)
        # Re-read before writing: another process may be training other students.
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        manifest[plan.name] = entry
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def check() -> None:
    """Each saved student loads as a LocalTeacher and answers a question."""
    from stillroom.teachers.base import GenerationParams, TeacherRequest
    from stillroom.teachers.local import LocalTeacher

    manifest_path = OUT / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    question = "What is a lighthouse? Answer in two sentences."
    for name, entry in manifest.items():
        student = LocalTeacher.load(entry["folder"], batch_size=1)
        request = TeacherRequest(None, (("user", question),), GenerationParams(48, 0.0, seed=0))
        entry["sample"] = student.generate([request])[0].choices[0].text
        print(f"{name}: {entry['sample']!r}", flush=True)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    sub.add_parser("measure")
    hv = sub.add_parser("harvest")
    hv.add_argument(
        "side", choices=["marked", "plain", "replay"],
        help="replay: twins of the first --first marked train answers, another seed",
    )  # fmt: skip
    hv.add_argument("--train", type=int, default=1000)
    hv.add_argument("--first", type=int, default=250)
    hv.add_argument("--held", type=int, help="held-out texts (default: plain 1000, marked 300)")
    tr = sub.add_parser("train")
    tr.add_argument("--answers", type=int, default=250)
    tr.add_argument("--epochs", type=int, default=1)
    tr.add_argument("--recipes", default="frozen,trimmed,full,lora")
    tr.add_argument("--side", choices=["both", "marked", "control"], default="both")
    tr.add_argument(
        "--share", type=float, default=1.0,
        help="watermarked share of a marked student's answers (the rest unwatermarked)",
    )  # fmt: skip
    sub.add_parser("check")
    for p in sub.choices.values():
        p.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
        p.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.stage == "measure":
        measure(args.max_tokens)
    elif args.stage == "harvest" and args.side == "replay":
        replay(args.first, args.max_tokens)
    elif args.stage == "harvest":
        marked = args.side == "marked"
        held = args.held if args.held is not None else (300 if marked else 1000)
        # Marked texts come from the end of the held-out prompts, plain ones from the start.
        skip = len(prompt_sets()[1]) - held if marked else 0
        harvest(args.side, args.train, args.first, held, skip, args.max_tokens)
    elif args.stage == "train":
        train(plans(args.answers, args.epochs, args.recipes.split(","), args.side, args.share))
    elif args.stage == "check":
        check()


if __name__ == "__main__":
    main()
