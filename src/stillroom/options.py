"""Typed options for the library's verbs: a pydantic model per verb, and every problem with
the options given reported at once, each under the option's own name.

The command line maps option names to its flags (`text_field` -> `--text-field`); the library
never names a flag.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from stillroom.errors import InputError

Options = TypeVar("Options", bound="VerbOptions")


class OptionsError(InputError):
    """Options that are invalid or cannot work together; lists every problem, by option."""

    def __init__(self, verb: str, problems: list[tuple[str, str]]) -> None:
        self.verb = verb
        self.problems = problems
        super().__init__(self.render())

    def render(self, name: dict[str, str] | None = None) -> str:
        """The message, with each option called `name[option]` (default: the option itself);
        a problem's text names other options as `{option}`."""
        names = _Names(name or {})
        lines = [f"{names[opt]}: {msg.format_map(names)}" for opt, msg in self.problems]
        if len(lines) == 1:
            return f"{self.verb}: {lines[0]}"
        listed = "\n".join(f"  - {line}" for line in lines)
        return f"{self.verb}: {len(lines)} problems with the options:\n{listed}"


class _Names(dict[str, str]):
    def __missing__(self, option: str) -> str:
        return option


class VerbOptions(BaseModel):
    """Base of every verb's options: unknown options are refused, values checked by type;
    `combination_problems` adds what no single field can know."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    verb: ClassVar[str] = "options"  # names the verb in messages; not an option

    @classmethod
    def parse(cls: type[Options], **values: Any) -> Options:
        """The options, or an OptionsError naming every problem at once."""
        try:
            options = cls(**values)
        except ValidationError as e:
            problems = [
                (".".join(str(p) for p in err["loc"]) or "options", err["msg"])
                for err in e.errors()
            ]
            raise OptionsError(cls.verb, problems) from None
        found = options.combination_problems()
        if found:
            raise OptionsError(options.verb, found)
        return options

    def combination_problems(self) -> list[tuple[str, str]]:
        return []
