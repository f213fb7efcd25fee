"""Student initialisation on a tiny random Gemma 3 (fast), plus slow tests on the real one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from stillroom.errors import ConfigError, StoreError
from stillroom.train.students import (
    STUDENT_FILE,
    LoraConfig,
    Student,
    StudentConfig,
    build_student,
    kept_layers,
    load_student,
    save_student,
)
from tests.helpers.tiny_models import SENTENCES, make_tiny_lm, make_tiny_tokenizer

KEPT_TEXTS = SENTENCES[:6]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def teacher(tiny_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval()


@pytest.fixture(scope="module")
def teacher_tok(tiny_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def keep_ids(teacher_tok: Any) -> set[int]:
    return {i for t in KEPT_TEXTS for i in teacher_tok(t).input_ids}


@pytest.fixture(scope="module")
def trimmed(tiny_dir: Path, keep_ids: set[int]) -> Student:
    return build_student(StudentConfig(keep_every=1), tiny_dir, keep_ids)


def logits(model: Any, tokenizer: Any, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits[0].float()  # (T, V)


def assert_same_split(student: Student, teacher_tok: Any, text: str) -> None:
    to_student = student.teacher_to_student()
    want = [int(to_student[i]) for i in teacher_tok(text).input_ids]
    assert -1 not in want
    assert student.tokenizer(text).input_ids == want


# ---- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"init": "config"}, "needs layers, hidden_size, heads"),
        ({"init": "config", "layers": 2, "hidden_size": 30, "heads": 4}, "set head_dim"),
        ({"init": "config", "layers": 2, "hidden_size": 32, "heads": 4, "kv_heads": 3}, "kv_heads"),
        ({"init": "pretrained"}, "needs path"),
        ({"keep_every": 3, "keep_layers": [0, 1]}, "not both"),
        ({"keep_layers": [3, 1]}, "increasing order"),
        ({"keep_layers": [-1, 2]}, "increasing order"),
        ({"layers": 4}, "layers does not apply to init: shrink"),
        ({"init": "pretrained", "path": "x", "keep_every": 3}, "keep_every does not apply"),
        ({"keep_evry": 2}, "Extra inputs are not permitted"),
        ({"lora": {"r": 0}}, "greater than or equal to 1"),
    ],
)
def test_config_problems_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StudentConfig.model_validate(raw)


def test_config_defaults() -> None:
    cfg = StudentConfig()
    assert (cfg.init, cfg.keep_every, cfg.trim_vocab, cfg.lora) == ("shrink", 2, True, None)
    lora = LoraConfig()
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_kept_layers_spread_from_first_to_last() -> None:
    assert kept_layers(12, 2) == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice
    assert kept_layers(18, 6) == [0, 9, 17]
    assert kept_layers(18, 3) == [0, 3, 7, 10, 14, 17]
    assert kept_layers(18, 1) == list(range(18))
    assert kept_layers(4, 100) == [0, 3]  # never fewer than two
    assert kept_layers(1, 2) == [0]
    assert kept_layers(18, 6, [2, 5]) == [2, 5]
    with pytest.raises(ConfigError, match=r"student.keep_layers: \[18\] out of range.*0..17"):
        kept_layers(18, 2, [0, 18])


# ---- shrink ------------------------------------------------------------------------------


def test_shrink_with_trimmed_vocab_keeps_logits_and_splits(
    trimmed: Student, teacher: Any, teacher_tok: Any, keep_ids: set[int]
) -> None:
    to_teacher = trimmed.to_teacher
    assert to_teacher is not None and to_teacher.dtype == np.int64
    assert np.all(np.diff(to_teacher) > 0) and keep_ids <= set(to_teacher.tolist())
    assert trimmed.vocab_student == len(to_teacher) == len(trimmed.tokenizer) < 512
    for text in KEPT_TEXTS:
        assert_same_split(trimmed, teacher_tok, text)
        # Every layer kept: the student's logits are the teacher's at the kept ids.
        want = logits(teacher, teacher_tok, text)[:, torch.from_numpy(to_teacher)]
        got = logits(trimmed.model, trimmed.tokenizer, text)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    config = trimmed.model.config
    for name in ("bos", "eos", "pad"):
        token_id = getattr(config, f"{name}_token_id")
        assert token_id == getattr(trimmed.tokenizer, f"{name}_token_id")
        assert to_teacher[token_id] == getattr(teacher_tok, f"{name}_token_id")


def test_unseen_text_tokenizes_with_the_byte_alphabet(trimmed: Student) -> None:
    text = "Zebras quaff 42 €uros — naïve 日本語"
    ids = trimmed.tokenizer(text).input_ids
    assert trimmed.tokenizer.unk_token_id not in ids
    assert trimmed.tokenizer.decode(ids, skip_special_tokens=True) == text


def test_shrink_report(trimmed: Student, teacher: Any) -> None:
    report = trimmed.describe()
    assert report["params_teacher"] == teacher.num_parameters()
    hidden = teacher.config.hidden_size
    assert (
        report["params_student"]
        == report["params_teacher"] - (512 - report["vocab_student"]) * hidden
    )
    assert report["params_trainable"] == report["params_student"]
    assert report["kept_layers"] == [0, 1] and report["init"] == "shrink"
    assert report["vocab_teacher"] == 512 and report["vocab_shared"] is False
    json.dumps(report)  # goes into a JSON report as is


def test_shrink_drops_layers_and_keeps_their_types(tiny_dir: Path, teacher: Any) -> None:
    student = build_student(StudentConfig(keep_layers=[1], trim_vocab=False), tiny_dir)
    model = student.model
    assert model.config.num_hidden_layers == 1
    assert model.config.layer_types == ["full_attention"]  # the teacher's layer 1
    assert student.to_teacher is None and student.vocab_student == 512
    want = teacher.model.layers[1].state_dict()
    for key, value in model.model.layers[0].state_dict().items():
        torch.testing.assert_close(value, want[key], atol=0, rtol=0)
    one_layer = sum(p.numel() for p in teacher.model.layers[0].parameters())
    assert student.params_student == student.params_teacher - one_layer


def test_shrink_an_untied_teacher_slices_the_head(tmp_path: Path, tiny_dir: Path) -> None:
    config = AutoConfig.from_pretrained(tiny_dir)
    config.tie_word_embeddings = False
    torch.manual_seed(1)
    untied = AutoModelForCausalLM.from_config(config)
    untied.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    student = build_student(StudentConfig(keep_every=1), tmp_path, tok(SENTENCES[0]).input_ids)
    assert student.model.lm_head.weight is not student.model.model.embed_tokens.weight
    rows = torch.from_numpy(student.to_teacher)
    torch.testing.assert_close(student.model.lm_head.weight, untied.lm_head.weight[rows])
    with torch.no_grad():
        want = untied(**tok(SENTENCES[0], return_tensors="pt")).logits[0][:, rows]
    torch.testing.assert_close(logits(student.model, student.tokenizer, SENTENCES[0]), want)


def test_trimming_needs_the_keep_ids(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="keep_token_ids"):
        build_student(StudentConfig(), tiny_dir)


def test_bad_keep_layers_and_teacher_folder(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="student.keep_layers"):
        build_student(StudentConfig(keep_layers=[0, 5], trim_vocab=False), tiny_dir)
    with pytest.raises(ConfigError, match="no config.json"):
        build_student(StudentConfig(trim_vocab=False), tmp_path)


def test_dtype(tiny_dir: Path) -> None:
    student = build_student(StudentConfig(trim_vocab=False, dtype="bfloat16"), tiny_dir)
    assert {p.dtype for p in student.model.parameters()} == {torch.bfloat16}


# ---- saving ------------------------------------------------------------------------------


def test_save_and_reload(trimmed: Student, teacher_tok: Any, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "student"
    save_student(trimmed, out)
    save_student(trimmed, out)  # replaces a previous save whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["student"]  # no temp folders left
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = KEPT_TEXTS[2]
    assert tokenizer(text).input_ids == trimmed.tokenizer(text).input_ids
    torch.testing.assert_close(
        logits(model, tokenizer, text), logits(trimmed.model, trimmed.tokenizer, text)
    )
    meta = json.loads((out / STUDENT_FILE).read_text())
    assert meta["to_teacher"] == trimmed.to_teacher.tolist()
    again = load_student(out)
    assert np.array_equal(again.to_teacher, trimmed.to_teacher)
    assert again.describe() == trimmed.describe()
    assert_same_split(again, teacher_tok, text)


def test_load_student_needs_its_metadata(tmp_path: Path, tiny_dir: Path) -> None:
    with pytest.raises(StoreError, match="init: pretrained"):
        load_student(tiny_dir)


# ---- config and pretrained init ---------------------------------------------------------


def test_config_init_builds_the_requested_shape(tiny_dir: Path, keep_ids: set[int]) -> None:
    cfg = StudentConfig(
        init="config", layers=3, hidden_size=32, heads=4, kv_heads=2, intermediate_size=48
    )
    student = build_student(cfg, tiny_dir, keep_ids)
    c = student.model.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size) == ("gemma3_text", 3, 32)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (4, 2, 8)
    assert c.intermediate_size == 48 and c.query_pre_attn_scalar == 8
    # The teacher's [sliding, full] pattern sampled at three evenly spaced depths.
    assert c.layer_types == ["sliding_attention", "full_attention", "full_attention"]
    assert c.vocab_size == student.vocab_student == len(student.to_teacher) < 512
    assert_same_split(student, AutoTokenizer.from_pretrained(tiny_dir), KEPT_TEXTS[0])
    assert student.params_student == student.model.num_parameters()
    same = build_student(cfg, tiny_dir, keep_ids)  # `seed` makes it reproducible
    torch.testing.assert_close(same.model.state_dict(), student.model.state_dict())


def test_config_init_other_architecture_full_vocab(tiny_dir: Path) -> None:
    cfg = StudentConfig(
        init="config", architecture="llama", layers=2, hidden_size=32, heads=2, trim_vocab=False
    )
    student = build_student(cfg, tiny_dir)
    assert type(student.model).__name__ == "LlamaForCausalLM"
    assert student.to_teacher is None and student.vocab_student == 512
    assert student.model.config.intermediate_size == 128
    with pytest.raises(ConfigError, match="student.architecture"):
        build_student(cfg.model_copy(update={"architecture": "no_such_model"}), tiny_dir)


def test_config_init_with_its_own_tokenizer(tiny_dir: Path, tmp_path: Path) -> None:
    make_tiny_tokenizer(tmp_path, vocab_size=300)
    cfg = StudentConfig(init="config", layers=1, hidden_size=32, heads=2, tokenizer=str(tmp_path))
    student = build_student(cfg, tiny_dir)
    assert student.vocab_student == 300 and student.to_teacher is not None
    own = student.tokenizer.convert_ids_to_tokens(list(range(300)))
    theirs = AutoTokenizer.from_pretrained(tiny_dir).get_vocab()
    assert student.to_teacher.tolist() == [theirs.get(t, -1) for t in own]
    with pytest.raises(ConfigError, match="student.tokenizer"):
        build_student(cfg.model_copy(update={"tokenizer": str(tmp_path / "none")}), tiny_dir)


def test_pretrained_init(tiny_dir: Path, trimmed: Student, teacher: Any, tmp_path: Path) -> None:
    same = build_student(StudentConfig(init="pretrained", path=tiny_dir), tiny_dir)
    assert same.to_teacher is None and same.params_student == teacher.num_parameters()
    save_student(trimmed, tmp_path / "s")
    again = build_student(StudentConfig(init="pretrained", path=tmp_path / "s"), tiny_dir)
    assert np.array_equal(again.to_teacher, trimmed.to_teacher)  # matched by token string
    with pytest.raises(ConfigError, match="student.path: .* has no config.json"):
        build_student(StudentConfig(init="pretrained", path=tmp_path / "nowhere"), tiny_dir)


# ---- LoRA --------------------------------------------------------------------------------


def test_lora_trains_adapters_only_and_saving_merges(
    tiny_dir: Path, keep_ids: set[int], tmp_path: Path
) -> None:
    cfg = StudentConfig(keep_every=1, lora=LoraConfig(r=4))
    student = build_student(cfg, tiny_dir, keep_ids)
    trainable = [n for n, p in student.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert 0 < student.params_trainable < student.params_student
    assert student.describe()["lora"]["r"] == 4
    with torch.no_grad():  # LoRA's B starts at zero; make the adapters matter
        for name, p in student.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    text = KEPT_TEXTS[1]
    want = logits(student.model, student.tokenizer, text)
    save_student(student, tmp_path / "lora")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    assert not any("lora" in k for k in plain.state_dict())
    torch.testing.assert_close(logits(plain, student.tokenizer, text), want, atol=1e-4, rtol=0)
    # The live student keeps its adapters for more training.
    assert any("lora_" in n for n, _ in student.model.named_parameters())
    bad = cfg.model_copy(update={"lora": LoraConfig(target_modules=["no_such_proj"])})
    with pytest.raises(ConfigError, match="student.lora.target_modules"):
        build_student(bad, tiny_dir, keep_ids)


# ---- the real teacher -------------------------------------------------------------------


GEMMA_TEXTS = [
    "The Eiffel Tower is located in the city of Paris.",
    "Classify the review as positive or negative.\n\nReview: I loved it! Label: positive",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Die Katze sitzt auf der Matte, und le chat dort.",
]


@pytest.mark.slow
def test_gemma_shrink(tmp_path: Path) -> None:
    from stillroom.runtime.gemma import default_teacher_dir

    teacher_dir = default_teacher_dir()
    teacher_tok = AutoTokenizer.from_pretrained(teacher_dir)
    keep = {i for t in GEMMA_TEXTS for i in teacher_tok(t).input_ids} | set(range(1000, 4000))
    chat = [{"role": "user", "content": GEMMA_TEXTS[0]}]
    teacher_chat = teacher_tok.apply_chat_template(chat, add_generation_prompt=True)
    keep |= set(teacher_chat["input_ids"])  # a harvest keeps the templated prompt's ids
    start = time.perf_counter()
    student = build_student(StudentConfig(keep_every=6), teacher_dir, keep)
    seconds = time.perf_counter() - start
    report = student.describe()
    print(json.dumps(report | {"build_seconds": round(seconds, 1)}))
    assert report["kept_layers"] == [0, 9, 17]
    assert student.model.config.layer_types == ["sliding_attention"] * 2 + ["full_attention"]
    assert report["params_teacher"] == 268_098_176
    assert report["params_student"] < report["params_teacher"] / 10
    assert 3000 < report["vocab_student"] < 6000
    for text in GEMMA_TEXTS:
        assert_same_split(student, teacher_tok, text)
    to_student = student.teacher_to_student()
    student_chat = student.tokenizer.apply_chat_template(chat, add_generation_prompt=True)
    assert list(student_chat["input_ids"]) == [to_student[i] for i in teacher_chat["input_ids"]]
    end_of_turn = student.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in student.model.generation_config.eos_token_id

    save_student(student, tmp_path / "student")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "student")
    assert tokenizer.padding_side == teacher_tok.padding_side
    text = GEMMA_TEXTS[1]
    torch.testing.assert_close(
        logits(model, tokenizer, text), logits(student.model, student.tokenizer, text)
    )


@pytest.mark.slow
def test_gemma_trimmed_vocab_keeps_the_teachers_logits() -> None:
    from stillroom.runtime.gemma import default_teacher_dir

    teacher_dir = default_teacher_dir()
    teacher_tok = AutoTokenizer.from_pretrained(teacher_dir)
    keep = {i for t in GEMMA_TEXTS for i in teacher_tok(t).input_ids}
    student = build_student(StudentConfig(keep_every=1), teacher_dir, keep)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    rows = torch.from_numpy(student.to_teacher)
    for text in GEMMA_TEXTS[:2]:
        want = logits(teacher, teacher_tok, text)[:, rows]
        got = logits(student.model, student.tokenizer, text)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_shrink_narrows_mlps_to_their_strongest_neurons(tiny_dir: Path, teacher: Any) -> None:
    full = teacher.config.intermediate_size
    width = full // 2
    student = build_student(
        StudentConfig(keep_layers=[0], intermediate_size=width, trim_vocab=False), tiny_dir
    )
    assert student.model.config.intermediate_size == width
    mlp, source = student.model.model.layers[0].mlp, teacher.model.layers[0].mlp
    strength = (
        source.gate_proj.weight.norm(dim=1)
        * source.up_proj.weight.norm(dim=1)
        * source.down_proj.weight.norm(dim=0)
    )
    keep = strength.topk(width).indices.sort().values
    torch.testing.assert_close(mlp.gate_proj.weight, source.gate_proj.weight[keep], atol=0, rtol=0)
    torch.testing.assert_close(mlp.down_proj.weight, source.down_proj.weight[:, keep])
    assert strength[keep].min() >= strength.sort().values[-width]  # the top half, none else
    with pytest.raises(ConfigError, match="wider than the teacher's"):
        build_student(StudentConfig(intermediate_size=full + 1, trim_vocab=False), tiny_dir)
