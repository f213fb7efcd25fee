"""The `stillroom` command: the root app, its sub-commands, and errors mapped to exit codes.

Exit codes: 0 done; 2 a usage error or a problem with the input (one line on stderr, naming
the option and the fix); 3 stopped at the budget; 130 interrupted. `--debug` shows the
traceback of an unexpected error.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.exceptions import TyperException

from stillroom.cli import audit, console, distill, serve, trace, watermark
from stillroom.cli.output import say
from stillroom.errors import StillroomError

app = typer.Typer(
    name="stillroom",
    help="Distill large language models into small ones, and find out who distilled yours.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors.", show_default=False)
    ] = False,
) -> None:
    _state["debug"] = debug


for command, name in (
    (distill.harvest, "harvest"),
    (distill.train, "train"),
    (distill.eval_, "eval"),
    (distill.distill, "distill"),
    (distill.demo, "demo"),
    (distill.task, "task"),
    (distill.export, "export"),
    (serve.serve, "serve"),
    (trace.trace, "trace"),
    (audit.audit, "audit"),
    (audit.simulate_traffic, "simulate-traffic"),
):
    app.command(name=name)(command)
app.add_typer(serve.accounts_app, name="accounts")
app.add_typer(watermark.app, name="watermark")
app.add_typer(console.app, name="console")


def usage_line(error: TyperException) -> str:
    """A usage error as one line: what is wrong and where help is."""
    ctx = getattr(error, "ctx", None)
    command = ctx.command_path if ctx is not None else "stillroom"
    return f"error: {error.format_message()}; see '{command} --help'"


def main(argv: list[str] | None = None) -> None:
    """Run the command line; always leaves through `sys.exit` with the documented code."""
    try:
        code = app(args=argv, standalone_mode=False)
    except StillroomError as e:
        if _state["debug"]:
            raise
        say(f"error: {e}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        say("interrupted: finished calls are stored; rerun the same command to continue")
        sys.exit(130)
    except (typer.Exit, typer.Abort) as e:
        sys.exit(getattr(e, "exit_code", 130))
    except TyperException as e:  # usage errors: a missing argument, an unknown option or command
        say(usage_line(e))
        sys.exit(2)
    # a command that stops early (typer.Exit(3) at the budget) returns its code here
    sys.exit(code if isinstance(code, int) else 0)
