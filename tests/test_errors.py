"""The exception tree: every purposeful error is a StillroomError, old import paths still
resolve to the same classes, and errors.py stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stillroom import errors
from stillroom.errors import APIError, BudgetExceeded, GatewayError, StillroomError


def test_every_error_class_sits_in_the_tree_and_is_drawn() -> None:
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(classes) >= 17
    for cls in classes:
        assert issubclass(cls, StillroomError), cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the drawing"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("stillroom.serve.accounts", "AccountError"),
        ("stillroom.serve.db", "GatewayDBError"),
        ("stillroom.serve.backends", "BackendError"),
        ("stillroom.serve.log", "LogWriteError"),
        ("stillroom.serve.app", "APIError"),
        ("stillroom.train.data", "VocabMismatch"),
        ("stillroom.train.vocab", "VocabTrimError"),
    ],
)
def test_old_import_paths_name_the_same_class(module: str, name: str) -> None:
    __import__(module)
    assert getattr(sys.modules[module], name) is getattr(errors, name)


def test_exit_codes_and_compatible_bases() -> None:
    assert StillroomError("x").exit_code == 2
    assert BudgetExceeded("x").exit_code == 3
    assert GatewayError("x").exit_code == 2
    assert issubclass(errors.VocabTrimError, ValueError)  # callers may still catch ValueError


def test_api_error_envelope_is_openai_shaped() -> None:
    e = APIError(429, "slow down", type="rate_limit_error", code="rate_limit_exceeded")
    assert e.envelope() == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert (e.status, e.headers) == (429, {})


def test_errors_imports_nothing_heavy_and_admin_does_not_import_the_app() -> None:
    code = (
        "import sys, stillroom.errors;"
        "heavy = {'torch', 'fastapi', 'sqlalchemy', 'numpy'} & set(sys.modules);"
        "assert not heavy, heavy;"
        "import stillroom.serve.admin;"
        "assert 'stillroom.serve.app' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
