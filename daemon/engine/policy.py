"""Inbound call policy (SPEC section 6): who may call in.

Caller ids are compared as exact digit strings after removing every non-digit, so
`+1 (415) 555-0123` equals `14155550123`; an empty or anonymous caller never matches, and there
is no suffix matching (`+99915550001234` is not `+15550001234`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class InboundPolicy(StrEnum):
    """The `inbound_policy` choices."""

    DISABLED = "disabled"
    ALLOWLIST = "allowlist"
    OPEN = "open"


def digits_only(number: str | None) -> str:
    """Every digit of `number`, in order; '' for None or a number with none."""
    if not number:
        return ""
    return "".join(ch for ch in number if "0" <= ch <= "9")


def admits(policy: str, caller: str | None, allow_from: Iterable[str]) -> tuple[bool, str]:
    """Decide whether an inbound call is accepted; return (accepted, reason)."""
    if policy == InboundPolicy.OPEN:
        return True, "policy is open"
    if policy == InboundPolicy.ALLOWLIST:
        wanted = digits_only(caller)
        if not wanted:
            return False, "missing caller id"
        for entry in allow_from:
            entry_digits = digits_only(entry)
            if entry_digits and entry_digits == wanted:
                return True, "caller is on the allowlist"
        return False, "caller is not on the allowlist"
    return False, "inbound policy is disabled"
