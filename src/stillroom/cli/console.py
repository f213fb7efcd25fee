"""`stillroom console`: the review web console, and its reviewers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stillroom.cli.output import emit, say
from stillroom.errors import InputError

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Gateway database: a SQLite path or a postgresql:// URL."),
]

app = typer.Typer(invoke_without_command=True)  # its help: the docstring of `console`
reviewers_app = typer.Typer(
    help="Who may log in to the console, and as what.", no_args_is_help=True
)
app.add_typer(reviewers_app, name="reviewers")


def _engine(db: str | None):  # type: ignore[no-untyped-def]
    from stillroom.console.store import create_tables
    from stillroom.serve.db import open_db

    if not db:
        raise InputError("--db: name the gateway database (a SQLite path or a postgresql:// URL)")
    engine = open_db(db)
    create_tables(engine)
    return engine


@app.callback()
def console(
    ctx: typer.Context,
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    session_hours: Annotated[
        float, typer.Option(help="A login lasts this long, then the reviewer logs in again.")
    ] = 8.0,
    idle_minutes: Annotated[float, typer.Option(help="... or once unused for this long.")] = 30.0,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="Behind HTTPS: cookies over HTTPS only.")
    ] = False,
) -> None:
    """The review console: audit cases, block with a reason, the audit trail.

    Serves the console on the gateway database; `reviewers` says who may log in.

    Example: stillroom console reviewers add alice --role reviewer --db gateway.sqlite

    Example: stillroom console --db gateway.sqlite --port 8100
    """
    if ctx.invoked_subcommand is not None:
        return
    if not 0 < session_hours <= 24 * 30:
        raise InputError(f"--session-hours {session_hours}: give more than 0, at most 720")
    if not 0 < idle_minutes <= session_hours * 60:
        raise InputError(
            f"--idle-minutes {idle_minutes}: give more than 0, at most --session-hours x 60"
        )
    import uvicorn

    from stillroom.console.app import create_console_app
    from stillroom.console.auth import ConsoleSettings

    engine = _engine(db)
    settings = ConsoleSettings(session_hours, idle_minutes, secure_cookies)
    say(f"console on http://{host}:{port}/ (log in with a reviewer token)")
    # No access log: it would hold every URL; tokens never travel in one, but case
    # searches name accounts.
    uvicorn.run(
        create_console_app(engine, settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )


@reviewers_app.command("add")
def reviewers_add(
    name: Annotated[str, typer.Argument(help="The reviewer's name, as the trail shows it.")],
    role: Annotated[str, typer.Option(help="viewer, reviewer or admin.")] = "reviewer",
    db: DbOption = None,
) -> None:
    """Add a reviewer; their token is printed once (keep it: only its hash is stored).

    Example: stillroom console reviewers add alice --role reviewer --db gateway.sqlite
    """
    from stillroom.console.store import add_reviewer

    reviewer, token = add_reviewer(_engine(db), name, role)
    emit({"id": reviewer.id, "name": reviewer.name, "role": reviewer.role, "token": token})


@reviewers_app.command("list")
def reviewers_list(db: DbOption = None) -> None:
    """The reviewers (never their tokens)."""
    from stillroom.console.store import list_reviewers

    emit({"data": list_reviewers(_engine(db))})


@reviewers_app.command("disable")
def reviewers_disable(
    name: Annotated[str, typer.Argument(help="The reviewer to stop.")], db: DbOption = None
) -> None:
    """Disable a reviewer: their token stops working and their sessions end."""
    from stillroom.console.store import disable_reviewer

    disable_reviewer(_engine(db), name)
    emit({"disabled": name})


@app.command("attach-trace")
def attach_trace(
    case: Annotated[int, typer.Argument(help="The case number, as the queue shows it.")],
    verdict: Annotated[Path, typer.Argument(help="A verdict written by `stillroom trace --json`.")],
    reviewer: Annotated[str, typer.Option(help="Who attaches it (a reviewer or admin).")],
    db: DbOption = None,
) -> None:
    """Attach a trace verdict to a case: the case page shows each test's p-value and words.

    Example: stillroom console attach-trace 3 rival.json --reviewer alice --db gateway.sqlite
    """
    import json

    from stillroom.console.cases import attach_trace as attach
    from stillroom.console.store import reviewer_named

    engine = _engine(db)
    who = reviewer_named(engine, reviewer, "reviewer")
    try:
        data = json.loads(verdict.read_text())
    except (OSError, ValueError) as e:
        raise InputError(
            f"{verdict}: cannot read it as JSON ({e}); give the --json file of `stillroom trace`"
        ) from None
    attach(engine, who, case, data, str(verdict))
    emit({"case": case, "attached": str(verdict)})
