"""Cross-account links that join sybil accounts into one actor.

Evidence between two accounts, one point per kind: a shared API key (two points: a key is
one account's), a shared client address, a shared user agent, a shared template signature
(each only when few accounts share the value: a corporate NAT or a popular SDK's user agent
is not evidence), and synchronised timing (the same hours active, Jaccard >= 0.6, among
accounts that are not simply always on). Two points join two accounts; actors are the
connected components.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

WEIGHTS = {"key": 2, "address": 1, "agent": 1, "template": 1, "timing": 1}
JOIN_AT = 2
SYNC_JACCARD = 0.6


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
    signatures: dict[str, set[int]],
    activity: list[dict[str, Any]],
    window_hours: float,
    max_share: int = 25,
) -> Links:
    """Join accounts by the evidence above; returns the account -> actor map and why."""
    pair_kinds: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in shared:
        groups[(str(row["kind"]), str(row["value"]))].append(str(row["account_id"]))
    owners: dict[int, list[str]] = defaultdict(list)
    for acct, sig in signatures.items():
        for k in sig:
            owners[k].append(acct)
    for k, accts in owners.items():
        if 2 <= len(accts) <= max_share:
            groups[("template", str(k))] = accts
    for (kind, value), accts in groups.items():
        for a, b in combinations(sorted(set(accts)), 2):
            pair_kinds[(a, b)].setdefault(kind, value)
    for a, b in _synchronised(activity, window_hours):
        pair_kinds[(a, b)].setdefault("timing", "same active hours")
    uf = _UF()
    for a in accounts:
        uf.find(a)
    joined: list[tuple[str, str, dict[str, str]]] = []
    for (a, b), kinds in pair_kinds.items():
        if sum(WEIGHTS[k] for k in kinds) >= JOIN_AT:
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


def _synchronised(activity: list[dict[str, Any]], window_hours: float) -> list[tuple[str, str]]:
    """Pairs active in mostly the same hours (Jaccard of active-hour sets >= SYNC_JACCARD)."""
    hours: dict[str, set[int]] = defaultdict(set)
    for r in activity:
        hours[str(r["account_id"])].add(int(r["hb"]))
    cand = sorted(a for a, h in hours.items() if 6 <= len(h) <= 0.5 * window_hours)
    if len(cand) < 2:
        return []
    base = min(min(hours[a]) for a in cand)
    width = max(max(hours[a]) for a in cand) - base + 1
    m = np.zeros((len(cand), width), dtype=np.float32)  # (A, H)
    for i, a in enumerate(cand):
        m[i, [h - base for h in hours[a]]] = 1.0
    size = m.sum(1)
    out = []
    for start in range(0, len(cand), 1024):
        inter = m[start : start + 1024] @ m.T  # (b, A)
        union = size[start : start + 1024, None] + size[None, :] - inter
        jac = inter / np.maximum(union, 1.0)
        ii, jj = np.nonzero(jac >= SYNC_JACCARD)
        for i, j in zip((ii + start).tolist(), jj.tolist(), strict=True):
            if i < j:
                out.append((cand[i], cand[j]))
    return out
