"""Where the store lives: a folder (SQLite) or a `postgresql://` URL (SPEC sections 3 and 16).

Stdlib-only: the config loader and the CLI use it without importing any database driver. A
password in the URL is a secret, so this module is also the one place that masks it: the value
object never prints it (`str`, `repr`), and :func:`mask_url_passwords` scrubs it out of any text
(a driver's error message, a log line) before that text leaves the daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")
"""The URL schemes libpq (and asyncpg) accept for PostgreSQL."""

EXPECTED = (
    "a folder for the SQLite store, or a PostgreSQL URL such as "
    '"postgresql://voicecall@db.example.com:5432/voicecall"'
)
"""What the `store` key accepts, for error messages."""

MASK = "********"

_USERINFO_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/@:\s]*:)(?P<pw>[^@\s/]*)@", re.IGNORECASE
)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#\s]*)", re.IGNORECASE)


class StoreKind(StrEnum):
    """The store backends."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


def mask_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it (userinfo or `?password=`) masked."""
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def is_postgres_url(value: str) -> bool:
    """Whether a `store` value names PostgreSQL rather than a folder."""
    scheme, sep, _ = value.strip().partition("://")
    return bool(sep) and scheme.lower() in POSTGRES_SCHEMES


def looks_like_url(value: str) -> bool:
    """Whether a `store` value is some `scheme://...` (so not meant as a folder)."""
    return re.match(r"^[a-z][a-z0-9+.-]*://", value.strip(), re.IGNORECASE) is not None


def check_postgres_url(value: str) -> str | None:
    """Why a `postgresql://` URL is unusable, or None when it is fine (password never quoted)."""
    try:
        parts = urlsplit(value.strip())
        _ = parts.port  # raises on a non-numeric port
    except ValueError as exc:
        return f"it is not a valid URL ({mask_url_passwords(str(exc))})"
    if any(ch.isspace() for ch in value.strip()):
        return "it contains whitespace"
    if not parts.hostname and "host=" not in parts.query:
        return "it names no host (write postgresql://USER@HOST:PORT/DATABASE)"
    if parts.fragment:
        return "it has a #fragment"
    return None


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A resolved `store` setting: exactly one of `folder` and `url` is set."""

    folder: Path | None = None
    """The SQLite store's folder."""
    url: str | None = field(default=None, repr=False)
    """The PostgreSQL connection URL, password included: never print it, use `display`."""

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.url is None):
            raise ValueError("a store location is a folder or a URL, not both or neither")

    @classmethod
    def sqlite(cls, folder: Path) -> StoreLocation:
        """A SQLite store in `folder`."""
        return cls(folder=folder)

    @classmethod
    def postgres(cls, url: str) -> StoreLocation:
        """A PostgreSQL store at `url`."""
        return cls(url=url.strip())

    @property
    def kind(self) -> StoreKind:
        """Which backend serves this location."""
        return StoreKind.SQLITE if self.folder is not None else StoreKind.POSTGRESQL

    @property
    def display(self) -> str:
        """For people, logs and RPC results: the folder, or the URL with its password masked."""
        if self.folder is not None:
            return str(self.folder)
        assert self.url is not None
        return mask_url_passwords(self.url)

    @property
    def password(self) -> str | None:
        """The URL's password, if it carries one (to scrub it from foreign error text)."""
        if self.url is None:
            return None
        parts = urlsplit(self.url)
        if parts.password:
            return unquote(parts.password)
        found = _QUERY_PASSWORD.search(self.url)
        return unquote(found["pw"]) if found and found["pw"] else None

    def scrub(self, text: str) -> str:
        """`text` (say, a driver's error message) with this location's password removed."""
        text = mask_url_passwords(text)
        password = self.password
        if password and len(password) >= 4:  # a shorter one would garble the text, not hide
            text = text.replace(password, MASK)
        return text

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"StoreLocation({self.display!r})"
