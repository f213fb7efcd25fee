"""Block the accounts of flagged units in a stillroom gateway database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stillroom.audit.result import FlaggedUnit
from stillroom.errors import InputError

GATEWAY_DB_SUFFIXES = (".sqlite", ".db", ".sqlite3")


BLOCK_REASON = "audit: policy: model-extraction"  # the evidence stays in the audit's output


@dataclass
class Blocked:
    accounts: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # account -> why it was not blocked


def block_flagged(db: str, flagged: Sequence[FlaggedUnit]) -> Blocked:
    """Block every account of every flagged unit in the gateway database `db`. The reason
    stored is a policy tag, not the evidence: the gateway repeats it to the blocked client,
    and evidence would tell a harvester which of its habits gave it away and by how much.
    An account the gateway does not know is reported in `refused`, not fatal: the log may
    hold accounts deleted since."""
    from stillroom.serve.accounts import AccountError, set_blocked
    from stillroom.serve.db import open_db

    if not (
        db.startswith(("postgresql://", "postgres://", "sqlite://"))
        or db.endswith(GATEWAY_DB_SUFFIXES)
    ):
        raise InputError(
            f"blocking needs the gateway database; {db!r} is a log file: name the gateway's "
            "database (a SQLite file or a postgresql:// URL)"
        )
    import sqlalchemy as sa

    engine = open_db(db, migrate=False)
    if not sa.inspect(engine).has_table("accounts"):
        raise InputError(
            f"{db!r} has no `accounts` table, so it is not a stillroom gateway's database "
            "(a LiteLLM or other gateway's log?); block the flagged accounts in that gateway, "
            "or name the stillroom gateway's database"
        )
    done = Blocked()
    for unit in flagged:
        reason = BLOCK_REASON
        for account in unit["accounts"]:
            try:
                set_blocked(engine, account, True, reason[:500])
                done.accounts.append(account)
            except AccountError as e:
                done.refused[account] = str(e)
    return done
