"""Shared builders for harvest tests: a prompt file and a config pointing at a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stillroom.config import HarvestConfig, validate_config


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "text": f"prompt number {i} about topic {i % 7}"}))
            f.write("\n")
    return path


def api_config(tmp_path: Path, base_url: str, n_prompts: int = 20, **over: Any) -> HarvestConfig:
    raw: dict[str, Any] = {
        "name": "t",
        "runs_dir": str(tmp_path / "runs"),
        "prompts": {
            "path": str(write_prompts(tmp_path / "p.jsonl", n_prompts)),
            "field": "text",
            "id_field": "id",
        },
        "teacher": {
            "kind": "api",
            "model": "fake-tiny",
            "base_url": base_url,
            "api_key_env": "STILLROOM_TEST_KEY",
            "concurrency": 8,
            "max_retries": 4,
            "retry_backoff_s": 0.01,
            "timeout_s": 5,
        },
        "generation": {"max_tokens": 8, "temperature": 1.0, "seed": 1, "top_logprobs": 5},
    }
    for dotted, value in over.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate_config(raw, "test")
