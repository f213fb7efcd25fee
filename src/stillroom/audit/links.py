"""Cross-account links that join sybil accounts into one actor.

Evidence between two accounts comes in independent families:

- **key**: a shared API key (a key is one account's): joins on its own;
- **infrastructure**: a shared client address, a shared /24 address block, a rare user agent
  (each only when few accounts share the value: a corporate NAT, a cloud range or a popular
  SDK's user agent is not evidence);
- **content**: the same system prompt among few accounts (a generic "You are a helpful
  assistant." is everyone's). Prompt-template signatures are not evidence: everyday phrasings
  ("explain X like I'm five") are shared by strangers;
- **account** (when the provider has an accounts table, accounts_meta.py): created within
  the same 6 hours, the same organization, the same (non-free-mail) email domain, the same
  payment method;
- **timing**: synchronised working windows (at least 3 and at least 60% of the smaller
  account's active 2-hour buckets in common, among accounts not active in most of them).

Two accounts join only on a key or a payment method (one payer), or on evidence of two
different families: an address or block and a system prompt, an address and an
organization or email domain. A user agent, a sign-up hour and working hours are each shared
by strangers too often (a carrier NAT's users are awake at the same hours) to count alone;
two of them together count as one family (a hydra's accounts, made in one sitting, work
the same shifts), and working hours beside an organization or a (non-free-mail) email
domain make a join (accounts on one throwaway domain working one rota). An address counts
only outside crowded ranges: one whose /24 block more than MAX_SHARE["block"] accounts use
is a cloud or serverless egress pool that strangers' apps share. So a shared address or
NAT alone never joins a customer to anyone. Actors are the connected components. Timing is
tested only for pairs that already share other evidence; that keeps the pair count small.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

FAMILY = {
    "key": "key",
    "address": "infrastructure",
    "block": "infrastructure",
    "agent": "infrastructure",
    "system": "content",
    "timing": "timing",
    "created": "account",
    "organization": "account",
    "email": "account",
    "payment": "account",
}
MAX_SHARE = {
    "address": 25,
    "block": 40,
    "agent": 25,
    "system": 40,
    "key": 25,
    "created": 40,
    "organization": 40,
    "email": 40,
    "payment": 40,
}
# User agents and sign-up hours are shared by strangers at a rate that grows with the log:
# one counts only when under this share of the log's accounts share it as well (in a small
# log, every SDK version is "rare" by count, and a whole cohort signs up in one afternoon).
COMMON_SHARE = 0.05
COMMON_KINDS = ("agent", "created")
# Kinds that strangers share by chance often enough (a popular client, a busy sign-up day,
# office hours) that one alone is not a family: two together count as one.
WEAK = ("agent", "created", "timing")
# ... and timing beside one of these makes a join: the same shifts on the same (non-free)
# email domain or organization (a hydra's accounts made on a throwaway domain, one rota).
TIMING_PARTNERS = ("email", "organization")
SYNC_BUCKET_S = 7200.0
SYNC_OVERLAP = 0.6
SYNC_MIN_BUCKETS = 3
ALWAYS_ON = 0.75  # active in more of the window's buckets than this: always on, not a shift


@dataclass
class Links:
    units: dict[str, str]  # account -> actor id (itself when alone)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # actor -> what joined it

    def members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for acct, unit in self.units.items():
            out[unit].append(acct)
        return {u: sorted(m) for u, m in out.items()}


class _UF:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def link(
    accounts: list[str],
    shared: list[dict[str, Any]],
    systems: dict[str, set[str]],
    activity: list[dict[str, Any]],
    window_hours: float,
    metadata: Sequence[tuple[str, str, str]] = (),
) -> Links:
    """Join accounts by the evidence above; returns the account -> actor map and why."""
    groups = _groups(accounts, shared, systems, metadata)
    pair_kinds: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    common_cap = max(2, int(COMMON_SHARE * len(accounts)))
    for (kind, value), accts in groups.items():
        members = sorted(set(accts))
        cap = min(MAX_SHARE[kind], common_cap) if kind in COMMON_KINDS else MAX_SHARE[kind]
        if not 2 <= len(members) <= cap:
            continue
        for a, b in combinations(members, 2):
            pair_kinds[(a, b)].setdefault(kind, value)
    buckets = _buckets(activity, window_hours)
    for (a, b), kinds in pair_kinds.items():
        if _synchronised(buckets.get(a), buckets.get(b)):
            kinds["timing"] = "same working windows"
    uf = _UF()
    for a in accounts:
        uf.find(a)
    joined: list[tuple[str, str, dict[str, str]]] = []
    for (a, b), kinds in pair_kinds.items():
        if joins(kinds):
            uf.union(a, b)
            joined.append((a, b, kinds))
    roots = {a: uf.find(a) for a in accounts}
    size: dict[str, int] = defaultdict(int)
    for root in roots.values():
        size[root] += 1
    units = {a: (f"actor:{r}" if size[r] > 1 else a) for a, r in roots.items()}
    evidence: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for a, _b, kinds in joined:
        for why in kinds:
            evidence[units[a]][why] += 1
    return Links(units, {u: dict(v) for u, v in evidence.items()})


def _groups(
    accounts: list[str],
    shared: list[dict[str, Any]],
    systems: dict[str, set[str]],
    metadata: Sequence[tuple[str, str, str]],
) -> dict[tuple[str, str], list[str]]:
    """(kind, value) -> the accounts that share it; addresses in crowded blocks left out."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in shared:
        groups[(str(row["kind"]), str(row["value"]))].append(str(row["account_id"]))
    for acct, prompts in systems.items():
        for v in prompts:
            groups[("system", v)].append(acct)
    present = set(accounts)
    for kind, value, acct in metadata:  # the table may list accounts with no traffic here
        if acct in present:
            groups[(kind, value)].append(acct)
    # An IPv4 address two accounts share has a shared block; if `shared` does not list it
    # (it lists values up to the largest MAX_SHARE), or lists more accounts than a block may
    # have, the address sits in a crowded range
    for kind, value in [k for k in groups if k[0] == "address"]:
        block = groups.get(("block", value.rsplit(".", 1)[0]), ())
        if value.count(".") == 3 and not 2 <= len(set(block)) <= MAX_SHARE["block"]:
            del groups[(kind, value)]
    return groups


def joins(kinds: dict[str, str]) -> bool:
    """Whether the evidence two accounts share makes them one actor (module docstring)."""
    families = {FAMILY[k] for k in kinds if k not in WEAK}
    if "key" in families or "payment" in kinds:
        return True
    if "timing" in kinds and any(k in kinds for k in TIMING_PARTNERS):
        return True
    weak = sum(k in kinds for k in WEAK)
    return len(families) + (weak >= 2) >= 2


def _buckets(activity: list[dict[str, Any]], window_hours: float) -> dict[str, set[int]]:
    """Each account's active 2-hour buckets, for accounts active in at most ALWAYS_ON of them
    (an always-on service is synchronised with everyone and so with no one)."""
    out: dict[str, set[int]] = defaultdict(set)
    for r in activity:
        out[str(r["account_id"])].add(int(r["bucket"]))
    limit = ALWAYS_ON * window_hours * 3600.0 / SYNC_BUCKET_S
    return {a: b for a, b in out.items() if len(b) <= limit}


def _synchronised(a: set[int] | None, b: set[int] | None) -> bool:
    if not a or not b:
        return False
    shared = len(a & b)
    return shared >= SYNC_MIN_BUCKETS and shared >= SYNC_OVERLAP * min(len(a), len(b))
