"""Inbound policy: exact digit-string allowlist matching."""

from __future__ import annotations

import pytest

from daemon.engine.policy import admits, digits_only


@pytest.mark.parametrize(
    ("caller", "allow", "accepted"),
    [
        ("+1 (415) 555-0123", ["+14155550123"], True),
        ("14155550123", ["+14155550123"], True),
        ("+15550001234", ["+15550001234"], True),
        ("+99915550001234", ["+15550001234"], False),  # no suffix matching
        ("5550001234", ["+15550001234"], False),
        ("", ["+15550001234"], False),
        ("anonymous", ["+15550001234"], False),
        (None, ["+15550001234"], False),
        ("+15550001234", [], False),
        ("+15550001234", ["not a number"], False),  # an entry with no digits never matches
    ],
)
def test_allowlist(caller: str | None, allow: list[str], accepted: bool) -> None:
    """Digits only, exact equality, anonymous never matches."""
    assert admits("allowlist", caller, allow)[0] is accepted


def test_disabled_and_open() -> None:
    """disabled rejects everyone, open accepts everyone (even anonymous)."""
    assert admits("disabled", "+15550001234", ["+15550001234"]) == (
        False,
        "inbound policy is disabled",
    )
    assert admits("open", None, [])[0] is True


def test_digits_only() -> None:
    """Every non-digit goes, including unicode digits' look-alikes."""
    assert digits_only("+1 (415) 555-0123 ext") == "14155550123"
    assert digits_only("١٢٣") == ""
