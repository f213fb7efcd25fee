"""`stillroom serve` and `stillroom accounts`: the gateway and its accounts from the shell."""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from stillroom.cli.output import emit, read_secret
from stillroom.errors import InputError

DEFAULT_DB = "gateway.sqlite"

DbOption = Annotated[
    str, typer.Option("--db", help="Gateway database: a SQLite path or a postgresql:// URL.")
]


def serve(  # long: typer reads the options from this signature
    model: Annotated[
        str | None,
        typer.Option(help="A local HF model folder, or 'gemma-3-270m' (the default teacher)."),
    ] = None,
    upstream: Annotated[
        str | None, typer.Option(help="Proxy to this OpenAI-compatible base URL instead.")
    ] = None,
    upstream_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the upstream API key.")
    ] = "OPENAI_API_KEY",
    db: DbOption = DEFAULT_DB,
    limits: Annotated[
        str | None,
        typer.Option(
            "--limits",
            help="Share rate limits with the other replicas in this postgresql:// database "
            "(default: each process limits in its own memory).",
        ),
    ] = None,
    watermark_key_file: Annotated[
        Path | None, typer.Option(help="Watermark the local model's outputs with this key.")
    ] = None,
    admin_token_file: Annotated[
        Path | None, typer.Option(help="File holding the admin API's bearer token.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    rpm: Annotated[int | None, typer.Option(help="Default requests/minute per account.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Default tokens/minute per account.")] = None,
    batch_size: Annotated[int, typer.Option(help="Local model: rows per micro-batch.")] = 16,
    max_tokens: Annotated[int, typer.Option(help="max_tokens when a request gives none.")] = 256,
    max_body_bytes: Annotated[
        int, typer.Option(help="Refuse bodies over this size (413) while they arrive.")
    ] = 4 * 1024 * 1024,
    unauthenticated_rpm: Annotated[
        int, typer.Option(help="Requests/minute one address may make without a valid key.")
    ] = 60,
    upstream_max_tokens: Annotated[
        int, typer.Option(help="--upstream: refuse max_tokens above this (400).")
    ] = 32768,
    api_docs: Annotated[
        bool,
        typer.Option(
            "--api-docs", help="Serve /docs and /openapi.json (off: they list the admin routes)."
        ),
    ] = False,
    model_process: Annotated[
        bool,
        typer.Option(
            help="Run the local model in its own process, so it never holds up the gateway's "
            "event loop (--no-model-process: in the gateway's process)."
        ),
    ] = True,
    dtype: Annotated[
        str, typer.Option(help="Local model precision: float32, bfloat16 or float16.")
    ] = "float32",
    model_threads: Annotated[
        int | None,
        typer.Option(
            help="Torch threads of the model process (default: all cores but one, which the "
            "gateway keeps for itself)."
        ),
    ] = None,
) -> None:
    """Serve a model behind an OpenAI-compatible API with accounts, limits and a request log.

    Example: stillroom serve --model gemma-3-270m --db gateway.sqlite --watermark-key-file wm.json
    """
    import uvicorn

    from stillroom.serve.app import create_app
    from stillroom.serve.backends import Backend, LocalBackend, UpstreamBackend
    from stillroom.serve.db import open_db
    from stillroom.serve.gateway import ServeSettings

    if (model is None) == (upstream is None):
        raise InputError("give exactly one of --model DIR and --upstream URL")
    if upstream is not None and watermark_key_file is not None:
        raise InputError(
            "--watermark-key-file needs --model: an upstream's sampling cannot be watermarked"
        )
    engine = open_db(db)
    backend: Backend
    if model is not None:
        from stillroom.teachers.local import LocalTeacher
        from stillroom.teachers.process import ProcessTeacher

        kw: dict[str, Any] = {}
        if watermark_key_file is not None:
            from stillroom.watermark.key import load_key

            kw["watermark"] = load_key(watermark_key_file)
        teacher: LocalTeacher | ProcessTeacher
        if model_process:
            threads = model_threads or max(1, (os.cpu_count() or 2) - 1)
            teacher = ProcessTeacher(
                model, dtype=dtype, batch_size=batch_size, threads=threads, **kw
            )
        else:
            teacher = LocalTeacher.load(model, dtype=dtype, batch_size=batch_size, **kw)
        backend = LocalBackend(teacher, default_max_tokens=max_tokens, max_tokens_limit=4096)
    else:
        backend = UpstreamBackend(
            str(upstream),
            api_key=os.environ.get(upstream_key_env),
            max_tokens_limit=upstream_max_tokens,
        )
    settings = ServeSettings(
        admin_token=read_secret(admin_token_file, "admin token"),
        default_rpm=rpm,
        default_tpm=tpm,
        default_max_tokens=max_tokens,
        max_body_bytes=max_body_bytes,
        unauthenticated_rpm=unauthenticated_rpm,
        api_docs=api_docs,
        limits_url=limits,
    )
    app = create_app(engine, backend, settings)
    sys.stderr.write(f"serving {backend.model_id} on http://{host}:{port}/v1 (log: {db})\n")
    # What startup built (modules, the app, the model) lives as long as the server: frozen,
    # it is left out of every later full collection. Unfrozen, each one walked it all and
    # stalled every request in flight (31 ms for the modules alone; 53 and 116 ms in two
    # benchmark runs beside a busy engine).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


accounts_app = typer.Typer(help="Gateway accounts and API keys.", no_args_is_help=True)


def _engine(db: str) -> Any:
    from stillroom.serve.db import open_db

    return open_db(db)


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Argument(help="A unique account name.")],
    db: DbOption = DEFAULT_DB,
    rpm: Annotated[int | None, typer.Option(help="Requests/minute for this account.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens/minute for this account.")] = None,
) -> None:
    """Create an account and its first key. The key is shown once; store it now.

    Example: stillroom accounts create acme --rpm 600
    """
    from stillroom.serve.accounts import create_account

    account, key = create_account(_engine(db), name, rpm_limit=rpm, tpm_limit=tpm)
    emit({"account": asdict(account), "key": key.key, "key_id": key.info.id})


@accounts_app.command("list")
def accounts_list(db: DbOption = DEFAULT_DB) -> None:
    """List accounts (no keys). Example: stillroom accounts list --db gateway.sqlite"""
    from stillroom.serve.accounts import list_accounts

    emit([asdict(a) for a in list_accounts(_engine(db))])


@accounts_app.command("block")
def accounts_block(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    reason: Annotated[str | None, typer.Option(help="Shown to the client in the 403.")] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Block an account: its requests get 403 (a running server applies it within a second).

    Example: stillroom accounts block acme --reason "harvesting for distillation"
    """
    from stillroom.serve.accounts import set_blocked

    emit(asdict(set_blocked(_engine(db), account, True, reason)))


@accounts_app.command("unblock")
def accounts_unblock(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Unblock an account. Example: stillroom accounts unblock acme"""
    from stillroom.serve.accounts import set_blocked

    emit(asdict(set_blocked(_engine(db), account, False)))


@accounts_app.command("keys")
def accounts_keys(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    new: Annotated[bool, typer.Option("--new", help="Make a new key (shown once).")] = False,
    revoke: Annotated[str | None, typer.Option(help="Revoke this key id.")] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """List an account's keys (ids only), make one with --new, or --revoke KEY_ID.

    Example: stillroom accounts keys acme --new
    """
    from stillroom.serve import accounts as acc

    engine = _engine(db)
    if new:
        key = acc.create_key(engine, account)
        emit({"key": key.key, "key_id": key.info.id})
    elif revoke:
        emit(asdict(acc.revoke_key(engine, revoke)))
    else:
        emit([asdict(k) for k in acc.list_keys(engine, account)])
