"""The `store` setting: folder or PostgreSQL URL, VOICECALL_STORE, and the password masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config.loader import check_document
from daemon.config.render import config_to_dict
from daemon.paths import Paths, resolve_paths
from daemon.store.location import StoreKind, StoreLocation, mask_url_passwords

URL = "postgresql://vc:S3cret-pass@db.example.com:5432/voicecall"


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return resolve_paths({"VOICECALL_HOME": str(tmp_path)})


def test_a_url_is_postgres_and_a_folder_is_sqlite(paths: Paths) -> None:
    config, report = check_document({"store": URL}, paths, {}, use_keyring=False)
    assert config is not None and not report.errors
    assert config.store.kind is StoreKind.POSTGRESQL and config.store.url == URL
    config, _ = check_document(
        {"store": "calls"}, paths, {}, use_keyring=False, source=paths.config
    )
    assert config is not None and config.store.kind is StoreKind.SQLITE
    assert config.store.folder == paths.config.parent / "calls"


def test_voicecall_store_overrides_the_file(
    paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment wins; a relative folder there is relative to the current directory."""
    config, _ = check_document(
        {"store": "calls"}, paths, {"VOICECALL_STORE": URL}, use_keyring=False
    )
    assert config is not None and config.store.url == URL
    monkeypatch.chdir(tmp_path)
    config, _ = check_document(
        {"store": URL}, paths, {"VOICECALL_STORE": "here"}, use_keyring=False
    )
    assert config is not None and config.store.folder == tmp_path / "here"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("redis://u:S3cret-pass@h/0", "a folder for the SQLite store, or a PostgreSQL URL"),
        ("postgresql://vc:S3cret-pass@h:port/db", "a usable PostgreSQL URL, but it is not a valid"),
        ("postgresql://vc:S3cret-pass@/db", "it names no host"),
        ("", "a folder for the SQLite store"),
    ],
)
def test_bad_values_are_named_with_the_password_masked(
    paths: Paths, value: str, expected: str
) -> None:
    config, report = check_document({"store": value}, paths, {}, use_keyring=False)
    assert config is None
    [error] = report.errors
    assert error.startswith("store = ") and expected in error, error
    assert "S3cret-pass" not in error


def test_a_bad_voicecall_store_is_an_error_naming_the_variable(paths: Paths) -> None:
    _, report = check_document(
        {}, paths, {"VOICECALL_STORE": "mysql://u:S3cret-pass@h/db"}, use_keyring=False
    )
    [error] = report.errors
    assert "from VOICECALL_STORE" in error and "S3cret-pass" not in error


def test_the_password_is_masked_in_every_rendering(paths: Paths) -> None:
    config, _ = check_document({"store": URL}, paths, {}, use_keyring=False)
    assert config is not None
    masked = "postgresql://vc:********@db.example.com:5432/voicecall"
    assert config_to_dict(config)["store"] == masked
    assert str(config.store) == masked and masked in repr(config.store)
    assert "S3cret-pass" not in repr(config)
    assert config_to_dict(config, mask=False)["store"] == URL


def test_scrub_removes_the_password_from_foreign_text() -> None:
    location = StoreLocation.postgres("postgresql://vc:p%40ss-word@h/db")
    assert location.password == "p@ss-word"
    assert (
        location.scrub("auth for p@ss-word failed at postgresql://vc:p%40ss-word@h/db")
        == "auth for ******** failed at postgresql://vc:********@h/db"
    )
    assert (
        mask_url_passwords("postgresql://h/db?user=vc&password=x1&sslmode=require")
        == "postgresql://h/db?user=vc&password=********&sslmode=require"
    )
    assert (
        mask_url_passwords("postgresql://vc@h/db and /plain/path")
        == "postgresql://vc@h/db and /plain/path"
    )


def test_a_store_change_is_one_restart_only_key(paths: Paths) -> None:
    """A reload reports `store` itself (not its parts) as needing a restart."""
    from daemon.config import live

    old, _ = check_document({}, paths, {}, use_keyring=False)
    new, _ = check_document({"store": URL}, paths, {}, use_keyring=False)
    assert old is not None and new is not None
    assert live.changed_keys(old, new) == ["store"] and not live.is_live("store")
