"""One exception tree. Every user-facing error says what went wrong, where, and the fix.

StillroomError                 anything stillroom raises on purpose (exit code 2)
├── ConfigError                a config file or override is invalid; lists every problem by key
├── InputError                 a prompt file is malformed; names file:line
├── BudgetExceeded             the next teacher call could push spend past --budget (exit code 3)
├── StoreError                 a run store is missing, locked, or from another run
├── TeacherError               a teacher call failed
│   ├── TeacherFatalError      400/401/403/404: retrying cannot help; the run stops at once
│   ├── TeacherUnavailable     still failing after every retry (429, 5xx, timeouts, network)
│   └── TeacherReplyError      the reply lacks a field we need; stored as an error row
├── VocabMismatch              the harvest's token ids have no place in the student's vocabulary
├── VocabTrimError             the tokenizer cannot be trimmed (also a ValueError)
└── GatewayError               the serve gateway failed
    ├── GatewayDBError         the gateway database cannot be opened, or is from a newer version
    ├── AccountError           an account or key is unknown, or a change to one is invalid
    ├── BackendError           the model behind the gateway could not answer; carries a status
    ├── LogWriteError          a request-log row could not be committed; the request is not served
    └── APIError               an HTTP error answered in OpenAI's error envelope

Only the standard library is imported here, so any module (the CLI's fast paths included)
can raise and catch these without pulling in torch or a web framework.
"""

from __future__ import annotations

from typing import Any


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
        self.status = status  # 400: the request's own fault
        super().__init__(message, status)

    def __str__(self) -> str:
        return str(self.args[0])


class TeacherUnavailable(TeacherError):
    """Transient failures (429, 5xx, timeouts, dropped connections) outlasted the retries."""


class TeacherReplyError(TeacherError):
    """The teacher answered, but the reply lacks something we need."""


class VocabMismatch(StillroomError):
    """The harvest's token ids cannot be expressed in the student's vocabulary."""


# A ValueError too: it was one before it joined the tree, and callers may still catch that.
class VocabTrimError(StillroomError, ValueError):
    """The tokenizer cannot be trimmed (not a plain BPE model); the message says the fix."""


class GatewayError(StillroomError):
    """Base of the serve gateway's errors."""


class GatewayDBError(GatewayError):
    pass


class AccountError(GatewayError):
    pass


class BackendError(GatewayError):
    """The backend could not answer. `status` is what the client should get."""

    def __init__(self, message: str, status: int = 502, code: str = "backend_error") -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class LogWriteError(GatewayError):
    pass


class APIError(GatewayError):
    """An error answered in OpenAI's envelope: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status, self.message, self.type = status, message, type
        self.code, self.param, self.headers = code, param, headers or {}
        super().__init__(message)

    def envelope(self) -> dict[str, Any]:
        """The JSON body OpenAI's clients parse."""
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": err}
