"""One exception tree. Every user-facing error says what went wrong, where, and the fix.

StillroomError                 anything stillroom raises on purpose (exit code 2)
├── ConfigError                a config file or override is invalid; lists every problem by key
├── InputError                 a prompt file is malformed; names file:line
├── BudgetExceeded             the next teacher call could push spend past --budget
├── StoreError                 a run store is missing, locked, or from another run
└── TeacherError               a teacher call failed
    ├── TeacherFatalError      400/401/403/404: retrying cannot help; the run stops at once
    ├── TeacherUnavailable     still failing after every retry (429, 5xx, timeouts, network)
    └── TeacherReplyError      the reply lacks a field we need; stored as an error row
"""

from __future__ import annotations


class StillroomError(Exception):
    """Base of every error stillroom raises on purpose."""

    exit_code = 2


class ConfigError(StillroomError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        n = len(problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} in the config:\n{lines}")


class InputError(StillroomError):
    """Bad prompt input; the message names file:line and the fix."""


class BudgetExceeded(StillroomError):
    exit_code = 3


class StoreError(StillroomError):
    pass


class TeacherError(StillroomError):
    pass


class TeacherFatalError(TeacherError):
    """A status retrying cannot fix (400, 401, 403, 404)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TeacherUnavailable(TeacherError):
    """Transient failures (429, 5xx, timeouts, dropped connections) outlasted the retries."""


class TeacherReplyError(TeacherError):
    """The teacher answered, but the reply lacks something we need."""
