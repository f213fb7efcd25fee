"""Accounts and API keys.

A key is `sr-<key id>-<secret>`: the id lets an operator name a key without holding it, the
secret is 32 random bytes. Only the key's SHA-256 is stored (a random 256-bit secret needs no
slow hash: there is nothing to brute-force), so a leaked database leaks no key, and the
plain key is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stillroom.errors import AccountError as AccountError  # its home before the tree
from stillroom.serve.db import accounts, api_keys, now

MAX_LIMIT = 10**12  # per-minute limits above this are "unlimited" in all but name
# Commands take an account by id or by name: a name shaped like an id would be ambiguous.
_ID_SHAPED = re.compile(r"acct_[0-9a-f]+", re.IGNORECASE)


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    created_at: float
    blocked_at: float | None
    blocked_reason: str | None
    rpm_limit: int | None
    tpm_limit: int | None

    @property
    def blocked(self) -> bool:
        return self.blocked_at is not None


@dataclass(frozen=True)
class KeyInfo:
    id: str
    account_id: str
    created_at: float
    revoked_at: float | None
    label: str | None


@dataclass(frozen=True)
class NewKey:
    key: str  # the plain key: shown once, never stored
    info: KeyInfo


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_account(
    engine: Engine, name: str, *, rpm_limit: int | None = None, tpm_limit: int | None = None
) -> tuple[Account, NewKey]:
    """A new account and its first key."""
    name = name.strip()
    if not name:
        raise AccountError("an account needs a name; give one, e.g. `accounts create acme`")
    for field, value in (("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit)):
        if value is not None and not 1 <= value <= MAX_LIMIT:
            raise AccountError(
                f"{field} is {value}; give a limit from 1 to {MAX_LIMIT}, or none for default"
            )
    if _ID_SHAPED.fullmatch(name):
        raise AccountError(f"{name!r} looks like an account id; pick a name that does not")
    account_id = "acct_" + secrets.token_hex(8)
    with engine.begin() as conn:
        taken = sa.or_(accounts.c.name == name, accounts.c.id == name)
        exists = conn.execute(sa.select(accounts.c.id, accounts.c.name).where(taken)).first()
        if exists and exists.id == name:
            raise AccountError(f"{name!r} is another account's account id; pick another name")
        if exists:
            raise AccountError(f"an account named {name!r} exists; pick another name")
        conn.execute(
            accounts.insert().values(
                id=account_id,
                name=name,
                created_at=now(),
                rpm_limit=rpm_limit,
                tpm_limit=tpm_limit,
            )
        )
    key = create_key(engine, account_id)
    return get_account(engine, account_id), key


def create_key(engine: Engine, account: str, *, label: str | None = None) -> NewKey:
    acct = get_account(engine, account)
    key_id = "key_" + secrets.token_hex(6)
    plain = f"sr-{key_id}-{secrets.token_urlsafe(32)}"
    created = now()
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                id=key_id,
                account_id=acct.id,
                key_hash=hash_key(plain),
                created_at=created,
                label=label,
            )
        )
    return NewKey(plain, KeyInfo(key_id, acct.id, created, None, label))


def revoke_key(engine: Engine, key_id: str) -> KeyInfo:
    with engine.begin() as conn:
        done = conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now())
        )
        if done.rowcount == 0:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
            if row is None:
                raise AccountError(f"no key {key_id!r}; `accounts keys ACCOUNT` lists the keys")
        row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one()
    return _key_info(row)


def list_keys(engine: Engine, account: str) -> list[KeyInfo]:
    acct = get_account(engine, account)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(api_keys).where(api_keys.c.account_id == acct.id).order_by("created_at")
        ).all()
    return [_key_info(r) for r in rows]


def get_account(engine: Engine, account: str) -> Account:
    """An account by id or name; an id wins over a name that equals it (one made before such
    names were refused)."""
    by_id = accounts.c.id == account
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(accounts)
            .where(sa.or_(by_id, accounts.c.name == account))
            .order_by(sa.case((by_id, 0), else_=1))
        ).first()
    if row is None:
        raise AccountError(f"no account {account!r}; `stillroom accounts list` shows them")
    return _account(row)


def list_accounts(engine: Engine) -> list[Account]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(accounts).order_by(accounts.c.created_at)).all()
    return [_account(r) for r in rows]


def set_blocked(engine: Engine, account: str, blocked: bool, reason: str | None = None) -> Account:
    acct = get_account(engine, account)
    values = (
        {"blocked_at": now(), "blocked_reason": reason}
        if blocked
        else {"blocked_at": None, "blocked_reason": None}
    )
    with engine.begin() as conn:
        conn.execute(accounts.update().where(accounts.c.id == acct.id).values(**values))
    return get_account(engine, acct.id)


@dataclass(frozen=True)
class Principal:
    """Who a request's key belongs to, as the gateway needs it on every request."""

    key_id: str
    account: Account


# Built once: the gateway runs it on its event loop for every key whose cache entry expired,
# and building the statement cost more than running it.
_LIVE_KEY = (
    sa.select(api_keys.c.id.label("key_id"), accounts)
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.key_hash == sa.bindparam("key_hash"), api_keys.c.revoked_at.is_(None))
)


def lookup_key(engine: Engine, key: str) -> Principal | None:
    """The live key's account, or None for an unknown or revoked key."""
    with engine.connect() as conn:
        row = conn.execute(_LIVE_KEY, {"key_hash": hash_key(key)}).first()
    if row is None:
        return None
    return Principal(row.key_id, _account(row))


def _account(row: sa.Row) -> Account:
    m = row._mapping
    return Account(
        m["id"],
        m["name"],
        m["created_at"],
        m["blocked_at"],
        m["blocked_reason"],
        m["rpm_limit"],
        m["tpm_limit"],
    )


def _key_info(row: sa.Row) -> KeyInfo:
    m = row._mapping
    return KeyInfo(m["id"], m["account_id"], m["created_at"], m["revoked_at"], m["label"])
