from pathlib import Path

import pytest

from stillroom.config import load_config
from stillroom.errors import ConfigError

GOOD = """\
name: demo
prompts:
  path: prompts.jsonl
  field: text
teacher:
  kind: api
  model: gpt-4o-mini
  base_url: http://127.0.0.1:1/v1
generation:
  max_tokens: 32
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_good_config_resolves_prompt_path_against_config_folder(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.prompts.path == tmp_path / "prompts.jsonl"
    assert cfg.generation.max_tokens == 32
    assert cfg.run_dir == Path("runs/demo")


def test_every_problem_is_reported_at_once_with_its_key_and_line(tmp_path: Path) -> None:
    bad = GOOD.replace("max_tokens: 32", "max_tokens: -1\n  temprature: 0.5").replace(
        "kind: api", "kind: rest"
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, bad))
    msg = str(info.value)
    assert "3 problems" in msg
    assert "teacher.kind (line 6)" in msg
    assert "generation.max_tokens (line 10)" in msg
    assert "generation.temprature (line 11): unknown key" in msg


def test_prompt_form_must_be_exactly_one(tmp_path: Path) -> None:
    bad = GOOD.replace("field: text", "field: text\n  template: 'Q: {text}'")
    with pytest.raises(ConfigError, match="exactly one of prompts.field"):
        load_config(write(tmp_path, bad))


def test_split_fractions_must_sum_to_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be 1"):
        load_config(write(tmp_path, GOOD + "split:\n  train: 0.5\n  validation: 0.1\n"))


def test_dotted_overrides_are_typed_by_yaml(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, GOOD), ["generation.max_tokens=64", 'generation.stop=["\\n", "END"]']
    )
    assert cfg.generation.max_tokens == 64
    assert cfg.generation.stop == ["\n", "END"]


def test_malformed_override_and_yaml_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(write(tmp_path, GOOD), ["generation.max_tokens"])
    with pytest.raises(ConfigError, match=r"(?s)cfg.yaml:2: .*not valid YAML"):
        load_config(write(tmp_path, "name: x\n  bad: [\n"))


def test_split_field_replaces_the_hash_split_and_names_the_keys_that_clash(
    tmp_path: Path,
) -> None:
    cfg = load_config(write(tmp_path, GOOD + "split:\n  field: fold\n  names: {heldout: test}\n"))
    assert cfg.split.field == "fold"
    assert [cfg.split.split_for(v) for v in ("heldout", " Dev ", "TRAIN", "fold-3")] == [
        "test",
        "validation",
        "train",
        None,
    ]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD + "split:\n  field: fold\n  train: 0.7\n  seed: 3\n"))
    assert "split.seed, split.train shape the seeded hash split, which split.field" in str(
        info.value
    )
    with pytest.raises(ConfigError, match=r"split.names applies only with split.field"):
        load_config(write(tmp_path, GOOD + "split:\n  names: {heldout: test}\n"))
    with pytest.raises(ConfigError, match=r"split.names.heldout"):
        load_config(write(tmp_path, GOOD + "split:\n  field: fold\n  names: {heldout: exam}\n"))
