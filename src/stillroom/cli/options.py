"""A verb's typed options from the command line: problems reported under the flags typed."""

from __future__ import annotations

from typing import Any, TypeVar

from stillroom.errors import InputError
from stillroom.options import OptionsError, VerbOptions

Options = TypeVar("Options", bound=VerbOptions)


def flag(option: str, renamed: dict[str, str]) -> str:
    """The flag for a library option: `text_field` -> `--text-field`, unless renamed."""
    return renamed.get(option, "--" + option.replace("_", "-"))


def parse_options(cls: type[Options], renamed: dict[str, str], **values: Any) -> Options:
    """`cls.parse(**values)`, with an OptionsError's problems named by their flags."""
    try:
        return cls.parse(**values)
    except OptionsError as e:
        names = {opt: flag(opt, renamed) for opt in cls.model_fields}
        raise InputError(e.render(names)) from None
