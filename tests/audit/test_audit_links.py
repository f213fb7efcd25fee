"""Which shared evidence joins two accounts into one actor (links.py's join rule)."""

from __future__ import annotations

from typing import Any

from stillroom.audit import accounts_meta, links

WEEK_H = 7 * 24.0


def _activity(account: str, buckets: list[int]) -> list[dict[str, Any]]:
    return [{"account_id": account, "bucket": b} for b in buckets]


SHIFTS = [10, 11, 30, 31, 50, 51]  # three evenings of two 2-hour buckets, out of 84
OTHER_SHIFTS = [3, 4, 20, 21, 70, 71]


def _link(
    metadata: list[tuple[str, str, str]],
    shared: list[dict[str, Any]] | None = None,
    b_shifts: list[int] = SHIFTS,
) -> links.Links:
    activity = _activity("a", SHIFTS) + _activity("b", b_shifts)
    return links.link(["a", "b"], shared or [], {}, activity, WEEK_H, metadata)


def test_a_throwaway_domain_and_the_same_shifts_join() -> None:
    meta = accounts_meta.evidence(
        {"a": {"email_domain": "mail7f3a.net"}, "b": {"email_domain": "mail7f3a.net"}}
    )
    lk = _link(meta)
    assert lk.units["a"] == lk.units["b"]
    assert lk.evidence[lk.units["a"]] == {"email": 1, "timing": 1}


def test_the_same_domain_on_other_shifts_does_not_join() -> None:
    meta = accounts_meta.evidence(
        {"a": {"email_domain": "mail7f3a.net"}, "b": {"email_domain": "mail7f3a.net"}}
    )
    lk = _link(meta, b_shifts=OTHER_SHIFTS)
    assert lk.units["a"] != lk.units["b"]


def test_a_free_mail_domain_and_the_same_shifts_do_not_join() -> None:
    meta = accounts_meta.evidence(
        {"a": {"email_domain": "gmail.com"}, "b": {"email_domain": "gmail.com"}}
    )
    lk = _link(meta)
    assert lk.units["a"] != lk.units["b"]


def _address(value: str, *accounts: str) -> list[dict[str, Any]]:
    """The rows shared_values gives for an address few accounts share, and for its block."""
    block = value.rsplit(".", 1)[0]
    return [{"kind": k, "value": v, "account_id": a} for k, v in (("address", value),
            ("block", block)) for a in accounts]  # fmt: skip


def test_a_shared_address_and_the_same_shifts_do_not_join() -> None:
    # a carrier NAT's users are awake at the same hours: not one actor
    lk = _link([], _address("10.1.2.3", "a", "b"))
    assert lk.units["a"] != lk.units["b"]


def test_a_shared_address_the_same_shifts_and_sign_up_hour_join() -> None:
    # two weak kinds together are one family: a hydra made in one sitting, one rota
    meta = accounts_meta.evidence({"a": {"created_at": 1e9}, "b": {"created_at": 1e9 + 60}})
    lk = _link(meta, _address("10.1.2.3", "a", "b"))
    assert lk.units["a"] == lk.units["b"]
    assert lk.evidence[lk.units["a"]] == {"address": 1, "block": 1, "created": 1, "timing": 1}


def test_the_same_shifts_and_sign_up_hour_alone_do_not_join() -> None:
    meta = accounts_meta.evidence({"a": {"created_at": 1e9}, "b": {"created_at": 1e9 + 60}})
    lk = _link(meta)
    assert lk.units["a"] != lk.units["b"]


def test_a_shared_address_and_system_prompt_join() -> None:
    lk = links.link(["a", "b"], _address("10.1.2.3", "a", "b"), {"a": {"s1"}, "b": {"s1"}},
                    [], WEEK_H)  # fmt: skip
    assert lk.units["a"] == lk.units["b"]


def test_an_address_in_a_crowded_range_is_not_evidence() -> None:
    # a serverless egress pool: its block is shared by more accounts than shared_values lists
    # (so no block row), and two tenants' apps with one builder's system prompt meet on it
    shared = [{"kind": "address", "value": "76.76.21.133", "account_id": x} for x in "ab"]
    lk = links.link(["a", "b"], shared, {"a": {"s1"}, "b": {"s1"}}, [], WEEK_H)
    assert lk.units["a"] != lk.units["b"]
