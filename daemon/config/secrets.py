"""Where each secret comes from: environment, config file, then the OS keyring (SPEC section 3).

The keyring is the slowest and least predictable source (a locked Secret Service can hang on a
D-Bus prompt), so it is asked last, only for secrets still unset, in one daemon thread with a
short deadline: a keyring that does not answer in time counts as "absent" and never blocks the
daemon or the CLI. `keyring` is imported inside that thread so that importing this module stays
cheap for the CLI.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Literal

from daemon.providers.catalog import SPECS
from daemon.speech.tts import catalog as tts_catalog

logger = logging.getLogger(__name__)

KEYRING_SERVICE = "voicecall"
"""The keyring service name; the username is the secret's dotted key (`twilio.auth_token`)."""

KEYRING_TIMEOUT_SECONDS = 2.0
"""How long all keyring lookups of one load may take together before they count as absent."""

NO_KEYRING_ENV = "VOICECALL_NO_KEYRING"
"""Set to 1 (or true/yes/on) to never ask the OS keyring (tests, headless servers)."""

SECRET_KEYS: dict[str, str | None] = {
    **{key: var for spec in SPECS for key, var in spec.secrets.items()},
    "tunnel.ngrok_authtoken": "NGROK_AUTHTOKEN",
    "streaming.api_key": "OPENAI_API_KEY",
    "agent.api_key": "OPENAI_API_KEY",
    **{f"tts.{v.name}.api_key": v.env_var for v in tts_catalog.VENDORS},
    **{f"messages.tts.{v.name}.api_key": v.env_var for v in tts_catalog.VENDORS},
    "realtime.api_key": "OPENAI_API_KEY",
}
"""Every secret's dotted config key and the environment variable that overrides it."""

NON_SECRET_ENV: dict[str, str] = {key: var for spec in SPECS for key, var in spec.plain_env.items()}
"""Plain settings with an environment fallback; unlike secrets, the config file wins over these.

`from_number` falls back to `TWILIO_FROM_NUMBER` only when the provider is twilio.
"""

SecretSource = Literal["env", "file", "keyring"]
"""Where a resolved secret was found."""

MASK = "********"
"""What is shown instead of a secret's value."""


def is_secret_key(key: str) -> bool:
    """Whether a dotted config key names a secret (its value is never shown)."""
    return key in SECRET_KEYS


def keyring_disabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether `VOICECALL_NO_KEYRING` turns keyring lookups off."""
    env = os.environ if env is None else env
    return env.get(NO_KEYRING_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def read_keyring(
    keys: Iterable[str], *, timeout: float = KEYRING_TIMEOUT_SECONDS
) -> dict[str, str]:
    """Look the keys up in the OS keyring without ever blocking longer than `timeout`.

    Returns the keys found (a failing, missing or slow backend just yields fewer). The lookups run
    in a daemon thread because some backends wait on a user prompt indefinitely; if the deadline
    passes, whatever was found so far is returned and the thread is abandoned.
    """
    wanted = [k for k in keys]
    if not wanted:
        return {}
    found: dict[str, str] = {}
    lock = threading.Lock()
    done = threading.Event()

    def lookup() -> None:
        try:
            import keyring  # lazy: slow to import, and only needed here

            for key in wanted:
                value = keyring.get_password(KEYRING_SERVICE, key)
                if value:
                    with lock:
                        found[key] = value
        except Exception as exc:  # any backend failure means "absent", never a crash
            logger.debug("keyring lookup failed: %s", type(exc).__name__)
        finally:
            done.set()

    thread = threading.Thread(target=lookup, name="voicecall-keyring", daemon=True)
    thread.start()
    if not done.wait(timeout):
        logger.warning("the OS keyring did not answer within %.1fs; treating it as empty", timeout)
    with lock:
        return dict(found)


def resolve_secrets(
    file_values: Mapping[str, str | None],
    env: Mapping[str, str] | None = None,
    *,
    use_keyring: bool = True,
    timeout: float = KEYRING_TIMEOUT_SECONDS,
) -> dict[str, tuple[str, SecretSource]]:
    """Resolve every secret key: its environment variable, then the file value, then the keyring.

    Args:
        file_values: the values the config file gives, by dotted key (absent or None = unset).
        env: the environment (default `os.environ`).
        use_keyring: False never touches the keyring (so does `VOICECALL_NO_KEYRING=1`).
        timeout: the deadline for all keyring lookups together.

    Returns:
        `{dotted_key: (value, source)}` for each secret that is set somewhere.
    """
    env = os.environ if env is None else env
    resolved: dict[str, tuple[str, SecretSource]] = {}
    for key, var in SECRET_KEYS.items():
        from_env = env.get(var, "") if var else ""
        from_file = file_values.get(key)
        if from_env:
            resolved[key] = (from_env, "env")
        elif from_file:
            resolved[key] = (from_file, "file")
    missing = [key for key in SECRET_KEYS if key not in resolved]
    if use_keyring and missing and not keyring_disabled(env):
        for key, value in read_keyring(missing, timeout=timeout).items():
            resolved[key] = (value, "keyring")
    return resolved


def resolve_secret(
    key: str,
    file_value: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    use_keyring: bool = True,
    timeout: float = KEYRING_TIMEOUT_SECONDS,
) -> tuple[str | None, SecretSource | None]:
    """Resolve one secret the same way as :func:`resolve_secrets`; `(None, None)` when unset."""
    if key not in SECRET_KEYS:
        raise KeyError(f"{key} is not a secret key; known: {', '.join(SECRET_KEYS)}")
    env = os.environ if env is None else env
    var = SECRET_KEYS[key]
    if var and env.get(var):
        return env[var], "env"
    if file_value:
        return file_value, "file"
    if use_keyring and not keyring_disabled(env):
        value = read_keyring([key], timeout=timeout).get(key)
        if value:
            return value, "keyring"
    return None, None
