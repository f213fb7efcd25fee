"""Tiny offline models for tests: a byte-level BPE tokenizer trained in-process and a
randomly initialised two-layer Gemma 3 causal LM, saved as a normal Hugging Face folder.

Gemma 3 (rather than Llama) so tests exercise the default teacher's architecture: sliding
and full attention layers, scaled embeddings, and final-logit softcapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A teacher model writes answers; a student model learns to copy them.",
    "Distillation trains a small model on the outputs of a large one.",
    "The cat sat on the mat and looked out of the window at the rain.",
    "Classify the review as positive or negative.",
    "Question: what is the capital of France? Answer: Paris.",
    "Once upon a time there was a little robot who liked to count stars.",
    "Numbers: one two three four five six seven eight nine ten.",
    "She sells sea shells by the sea shore, and the shells are surely sea shells.",
    "In the morning the market opens, and in the evening it closes again.",
    "user: hello there! model: hi, how can I help you today?",
    "Label: positive. Label: negative. Label: neutral.",
]

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def make_tiny_tokenizer(directory: Path, *, vocab_size: int = 512) -> None:
    """Train a byte-level BPE on SENTENCES and save it as a PreTrainedTokenizerFast."""
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
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    bos = tok.token_to_id("<bos>")
    # Plain prompts start with <bos>, as Gemma's do.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)


def make_sharp_tiny_lm(directory: Path, *, scale: float = 6.0) -> Path:
    """A tiny LM whose output layer is scaled up: a random tiny LM is nearly uniform, which
    leaves a student nothing to learn from its distribution."""
    import torch
    from transformers import AutoModelForCausalLM

    path = make_tiny_lm(directory)
    lm = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        lm.get_output_embeddings().weight.mul_(scale)
    lm.save_pretrained(path)
    return path


def make_tiny_lm(directory: Path, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """Build and save a tiny random Gemma 3 LM with its tokenizer; return the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig

    directory = Path(directory)
    make_tiny_tokenizer(directory, vocab_size=vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        # Longer than any test sequence: HF's sliding mask counts left padding as
        # positions, so a short window would make padded and unpadded runs differ.
        sliding_window=256,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=1024,
        final_logit_softcapping=30.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    return directory


def fit_on_answers(
    directory: Path,
    prompts: list[str],
    answers: list[str] | list[list[int]],
    *,
    steps: int,
    lr: float = 3e-3,
    batch: int = 32,
    seed: int = 0,
) -> Path:
    """Fine-tune the LM in `directory` in place on chat-formatted (prompt, answer) pairs,
    cross-entropy on the answer tokens only: a student taught by another model's outputs.
    An answer is text, or token ids as a local teacher's harvest stores them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    lm = AutoModelForCausalLM.from_pretrained(directory)
    rows = []
    for p, a in zip(prompts, answers, strict=True):
        head = tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        rows.append(
            (
                tok(head, add_special_tokens=False)["input_ids"],
                (a if isinstance(a, list) else tok(a, add_special_tokens=False)["input_ids"])
                + [tok.eos_token_id],
            )
        )
    opt = torch.optim.AdamW(lm.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    lm.train()
    for _ in range(steps):
        picked = [rows[i] for i in torch.randint(len(rows), (batch,), generator=gen).tolist()]
        width = max(len(h) + len(a) for h, a in picked)
        ids = torch.full((batch, width), tok.pad_token_id)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, (h, a) in enumerate(picked):
            ids[r, : len(h) + len(a)] = torch.tensor(h + a)
            labels[r, len(h) : len(h) + len(a)] = torch.tensor(a)
            mask[r, : len(h) + len(a)] = 1
        loss = lm(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.save_pretrained(directory)
    return Path(directory)


def make_wordy_tiny_lm(directory: Path, *, scale: float = 3.0, seed: int = 0) -> Path:
    """A tiny LM that writes only tokens which decode to whole characters: its output rows
    for byte pieces (and special tokens but <eos>) are zero, so they never win against the
    scaled-up rest. Its text survives decoding and re-encoding, as real model text does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_lm(directory, seed=seed)
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        head = lm.get_output_embeddings().weight
        head.mul_(scale)
        for i in range(len(tok)):
            text = tok.decode([i])
            if i != tok.eos_token_id and (i in tok.all_special_ids or "\ufffd" in text or not text):
                head[i] = 0.0
    lm.save_pretrained(path)
    return path


def watermarked_student(root: Path, key: Any) -> dict[str, Any]:
    """A wordy tiny teacher in root/teacher writes answers to 256 random prompts with `key`:
    192 teach a fine-tuned copy of it (root/student), 64 stay fresh for reading ("texts").
    "plain" holds the unwatermarked teacher's answers to those 64 prompts."""
    import random
    import shutil

    from stillroom.teachers.local import LocalTeacher
    from stillroom.trace.suspects import LocalSuspect

    words = sorted({w for s in SENTENCES for w in s.split()})
    teacher = make_wordy_tiny_lm(root / "teacher")
    rng = random.Random(0)
    prompts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) for _ in range(256)]
    writer = LocalTeacher.load(str(teacher), batch_size=64, watermark=key)
    writer.model = "writer"  # sampling seeds derive from the name: not from a temp path
    suspect = LocalSuspect.__new__(LocalSuspect)
    suspect.teacher, suspect.name = writer, "writer"
    texts = suspect.answer(prompts, max_tokens=48, temperature=1.0, seed=0)
    shutil.copytree(teacher, root / "student")
    fit_on_answers(root / "student", prompts[:192], texts[:192], steps=80, lr=3e-3)
    suspect.teacher = LocalTeacher.load(str(teacher), batch_size=64)  # no key
    suspect.teacher.model = "writer"
    plain = suspect.answer(prompts[192:], max_tokens=48, temperature=1.0, seed=1)
    return {"root": root, "texts": texts, "plain": plain, "tokenizer": writer.tokenizer}
