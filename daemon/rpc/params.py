"""Typed access to JSON-RPC params: every bad value names the parameter."""

from __future__ import annotations

import reprlib
from datetime import UTC, datetime
from typing import Any

from daemon.errors import InvalidParamsError

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = 5
_short.maxdict = 5


def _show(value: Any) -> str:
    """A bounded rendering of a bad value, so an error reply stays small."""
    return _short.repr(value)


class Params:
    """A read-only view of a params object."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def text(self, name: str, *, required: bool = True) -> str | None:
        """A string parameter; required ones must be non-empty."""
        value = self.raw.get(name)
        if value is None:
            if required:
                raise InvalidParamsError(f"missing parameter {name!r}")
            return None
        if not isinstance(value, str):
            raise InvalidParamsError(f"parameter {name!r} must be a string, not {_show(value)}")
        if required and not value.strip():
            raise InvalidParamsError(f"parameter {name!r} is empty")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidParamsError(f"parameter {name!r} is not valid Unicode text") from None
        return value

    def req(self, name: str) -> str:
        """A required non-empty string parameter."""
        value = self.text(name)
        assert value is not None
        return value

    def integer(self, name: str, *, minimum: int = 0, maximum: int | None = None) -> int | None:
        """An optional integer parameter within bounds."""
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParamsError(f"parameter {name!r} must be an integer, not {_show(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum}" + (f" to {maximum}" if maximum is not None else " up")
            raise InvalidParamsError(f"parameter {name!r} = {value} is out of range ({bound})")
        return value

    def flag(self, name: str) -> bool | None:
        """An optional boolean parameter."""
        value = self.raw.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise InvalidParamsError(
                f"parameter {name!r} must be true or false, not {_show(value)}"
            )
        return value

    def timestamp(self, name: str) -> str | None:
        """An optional ISO 8601 date or date-time (UTC when it has no zone), returned in the
        store's own format (`2026-01-02T03:04:05.000Z`) so that it compares as text."""
        value = self.text(name, required=False)
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidParamsError(
                f"parameter {name!r} = {_show(value)} is not an ISO 8601 date or date-time; "
                "use e.g. 2026-01-31 or 2026-01-31T09:30:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")

    def texts(self, name: str) -> list[str]:
        """An optional list of strings."""
        value = self.raw.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidParamsError(f"parameter {name!r} must be a list of strings")
        return list(value)
