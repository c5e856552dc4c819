"""Secret resolution (env > file > keyring) with a real in-memory keyring backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend

from daemon.config.loader import check_document
from daemon.config.secrets import (
    KEYRING_SERVICE,
    SECRET_KEYS,
    read_keyring,
    resolve_secret,
    resolve_secrets,
)
from daemon.paths import resolve_paths


class MemoryKeyring(KeyringBackend):
    """A keyring that lives in a dict; `gate` makes lookups hang until it is set."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.store: dict[tuple[str, str], str] = {}
        self.gate: threading.Event | None = None

    def get_password(self, service: str, username: str) -> str | None:
        if self.gate is not None:
            self.gate.wait(10)
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


class BrokenKeyring(MemoryKeyring):
    """A keyring whose every lookup fails, like a locked or missing backend."""

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringError("locked")


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        if backend.gate is not None:
            backend.gate.set()
        keyring.set_keyring(previous)


def test_secret_keys_table() -> None:
    """Every secret of SPEC section 3 with its environment variable."""
    assert SECRET_KEYS["twilio.auth_token"] == "TWILIO_AUTH_TOKEN"
    assert SECRET_KEYS["telnyx.public_key"] == "TELNYX_PUBLIC_KEY"
    assert SECRET_KEYS["tunnel.ngrok_authtoken"] == "NGROK_AUTHTOKEN"
    assert SECRET_KEYS["messages.tts.elevenlabs.api_key"] == "ELEVENLABS_API_KEY"
    assert {
        SECRET_KEYS[k] for k in ("streaming.api_key", "agent.api_key", "tts.openai.api_key")
    } == {"OPENAI_API_KEY"}
    assert KEYRING_SERVICE == "voicecall"


def test_order_env_then_file_then_keyring(memory_keyring: MemoryKeyring) -> None:
    """The environment wins over the file, the file over the keyring."""
    memory_keyring.set_password("voicecall", "twilio.auth_token", "from-keyring")
    key = "twilio.auth_token"
    env = {"TWILIO_AUTH_TOKEN": "from-env"}
    assert resolve_secret(key, "from-file", env) == ("from-env", "env")
    assert resolve_secret(key, "from-file", {}) == ("from-file", "file")
    assert resolve_secret(key, None, {}) == ("from-keyring", "keyring")
    assert resolve_secret(key, None, {}, use_keyring=False) == (None, None)
    assert resolve_secret(key, None, {"VOICECALL_NO_KEYRING": "1"}) == (None, None)
    assert resolve_secret("plivo.auth_token", None, {}) == (None, None)


def test_resolve_secrets_reports_sources(memory_keyring: MemoryKeyring) -> None:
    """One call resolves every secret and says where each came from."""
    memory_keyring.set_password("voicecall", "plivo.auth_token", "kr")
    memory_keyring.set_password("voicecall", "twilio.auth_token", "kr-loses")
    got = resolve_secrets({"twilio.auth_token": "file"}, {"OPENAI_API_KEY": "sk"})
    assert got["twilio.auth_token"] == ("file", "file")
    assert got["plivo.auth_token"] == ("kr", "keyring")
    assert got["agent.api_key"] == ("sk", "env") and got["streaming.api_key"] == ("sk", "env")
    assert "telnyx.api_key" not in got


def test_loader_uses_the_keyring_and_records_sources(
    memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    """A provider's token may live only in the keyring; config.secret_sources says so."""
    memory_keyring.set_password("voicecall", "twilio.auth_token", "kr-token")
    paths = resolve_paths({"VOICECALL_HOME": str(tmp_path)})
    data = {
        "provider": "twilio",
        "from_number": "+15550001234",
        "public_url": "https://v.example.com/w",
        "twilio": {"account_sid": "AC1"},
    }
    config, report = check_document(data, paths, {}, use_keyring=True)
    assert report.problems == () and config is not None
    assert config.twilio.auth_token == "kr-token"
    assert config.secret_sources["twilio.auth_token"] == "keyring"
    config, report = check_document(data, paths, {}, use_keyring=False)
    assert report.missing and config is not None and config.twilio.auth_token is None


def test_core_tts_key_from_keyring_feeds_call_tts(
    memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    """messages.tts.* keys in the keyring count for the effective call TTS."""
    memory_keyring.set_password("voicecall", "messages.tts.elevenlabs.api_key", "el")
    paths = resolve_paths({"VOICECALL_HOME": str(tmp_path)})
    config, _ = check_document({}, paths, {}, use_keyring=True)
    assert config is not None and config.tts.elevenlabs.api_key == "el"


def test_slow_keyring_times_out_as_absent(memory_keyring: MemoryKeyring) -> None:
    """A keyring that never answers costs at most the timeout and counts as empty."""
    memory_keyring.set_password("voicecall", "twilio.auth_token", "late")
    memory_keyring.gate = threading.Event()
    assert read_keyring(["twilio.auth_token"], timeout=0.05) == {}


def test_failing_keyring_is_absent() -> None:
    """A backend error is treated as 'not in the keyring'."""
    previous = keyring.get_keyring()
    keyring.set_keyring(BrokenKeyring())
    try:
        assert read_keyring(["twilio.auth_token"], timeout=1) == {}
    finally:
        keyring.set_keyring(previous)


def test_unknown_secret_key_is_refused() -> None:
    """resolve_secret only answers for secret keys."""
    with pytest.raises(KeyError, match="not a secret key"):
        resolve_secret("serve.port", None, {}, use_keyring=False)
