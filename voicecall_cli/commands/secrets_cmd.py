"""`voicecall secrets`: store provider credentials in the OS keyring, never on the command line.

Values are prompted with hidden input (or read from stdin for scripts), so they stay out of shell
history and `ps`. `keyring` is imported inside the commands: it is slow to import and most
invocations of `voicecall` never touch it. Lookups that could hang (a locked Secret Service
waiting on an unlock prompt) run with a deadline.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

import click

from daemon.config.secrets import KEYRING_SERVICE, NO_KEYRING_ENV, SECRET_KEYS, read_keyring
from voicecall_cli.errors import CliError
from voicecall_cli.output import emit_json

PROBE_TIMEOUT_SECONDS = 5.0
PROBE_USER = "__voicecall_probe__"

FALLBACK_HELP = """\
Without an OS keyring, give voicecall its secrets one of these ways:
  - environment variable: e.g. TWILIO_AUTH_TOKEN=... (for the systemd unit, an
    EnvironmentFile= with mode 0600); `voicecall secrets list` shows each variable's name;
  - config file: put the key in the config file and `chmod 600` it (`voicecall doctor` warns);
  - a file-based keyring: pip install keyrings.alt, then
    PYTHON_KEYRING_BACKEND=keyrings.alt.file.PlaintextKeyring (not encrypted; or
    keyrings.cryptfile for an encrypted file);
  - on a desktop session: run a Secret Service (gnome-keyring, KWallet), e.g.
    `dbus-run-session -- sh -c 'gnome-keyring-daemon --unlock; voicecall ...'`."""


@dataclass(frozen=True, slots=True)
class BackendState:
    """The keyring backend `keyring` chose, and whether it works here."""

    name: str
    usable: bool
    reason: str


def _backend_state() -> BackendState:
    """Find the active backend and probe it with a read that must answer within a deadline."""
    try:
        import keyring
        from keyring.backends import chainer, fail
    except ImportError:
        return BackendState("none", False, "the keyring package is not installed")
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # a bad PYTHON_KEYRING_BACKEND raises from the loader
        return BackendState("none", False, f"the keyring backend failed to load: {exc}")
    name = f"{type(backend).__module__}.{type(backend).__qualname__}"
    if isinstance(backend, fail.Keyring):
        return BackendState(name, False, "no keyring backend is available on this system")
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return BackendState(name, False, "no keyring backend is available on this system")
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            backend.get_password(KEYRING_SERVICE, PROBE_USER)
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe, name="voicecall-keyring-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_SECONDS)
    if not outcome:
        return BackendState(
            name,
            False,
            f"the backend did not answer within {PROBE_TIMEOUT_SECONDS:g}s "
            "(a locked collection waiting for an unlock prompt?)",
        )
    if outcome[0] is not None:
        failure = outcome[0]
        return BackendState(name, False, f"the backend failed: {type(failure).__name__}: {failure}")
    return BackendState(name, True, "ok")


def _require_backend() -> BackendState:
    state = _backend_state()
    if not state.usable:
        raise CliError(f"no usable OS keyring ({state.name}): {state.reason}.\n{FALLBACK_HELP}")
    return state


def _env_warning(name: str) -> None:
    var = SECRET_KEYS[name]
    if var and os.environ.get(var):
        click.echo(
            f"Warning: {var} is set in this environment and takes precedence over the keyring.",
            err=True,
        )


NAME = click.argument("name", metavar="NAME", type=click.Choice(list(SECRET_KEYS)))
JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.group("secrets", short_help="Store provider credentials in the OS keyring.")
def secrets_group() -> None:
    """Store, remove and inspect secrets in the OS keyring (service `voicecall`).

    A secret is read from its environment variable first, then the config file, then the
    keyring, whose username is the secret's dotted key (e.g. `twilio.auth_token`).

    \b
    Examples:
      $ voicecall secrets set twilio.auth_token
      $ printf '%s' "$TOKEN" | voicecall secrets set telnyx.api_key --stdin
      $ voicecall secrets list
      $ voicecall secrets backend
    """


@secrets_group.command("set", short_help="Store a secret (prompted, hidden).")
@NAME
@click.option(
    "--stdin",
    "from_stdin",
    is_flag=True,
    help="Read the value from stdin (one trailing newline is dropped) instead of prompting.",
)
@JSON
def set_secret(name: str, from_stdin: bool, as_json: bool) -> None:
    """Store the secret NAME in the OS keyring.

    The value is prompted twice with hidden input, or read from stdin with --stdin, so it never
    appears in shell history or the process list. Fails with status 1, and the ways to do
    without a keyring, when no keyring backend works.

    \b
    Examples:
      $ voicecall secrets set twilio.auth_token
      $ voicecall secrets set tunnel.ngrok_authtoken --stdin < token.txt
    """
    state = _require_backend()
    if from_stdin:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
        if not value:
            raise click.UsageError(
                "no value on stdin; pipe the secret in, e.g. "
                f"`printf '%s' \"$VALUE\" | voicecall secrets set {name} "
                "--stdin`"
            )
    else:
        value = click.prompt(
            f"Value for {name}", hide_input=True, confirmation_prompt=True, err=True
        )
    import keyring
    from keyring.errors import KeyringError

    try:
        keyring.set_password(KEYRING_SERVICE, name, value)
    except KeyringError as exc:
        raise CliError(f"could not store {name} in {state.name}: {exc}.\n{FALLBACK_HELP}") from None
    _env_warning(name)
    if as_json:
        emit_json({"name": name, "stored": True, "backend": state.name})
    else:
        click.echo(f"Stored {name} in the keyring ({state.name}).")


@secrets_group.command("delete", short_help="Remove a secret from the keyring.")
@NAME
@JSON
def delete_secret(name: str, as_json: bool) -> None:
    """Remove the secret NAME from the OS keyring. Exits 1 when it was not stored there.

    \b
    Examples:
      $ voicecall secrets delete twilio.auth_token
    """
    state = _require_backend()
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, name)
    except PasswordDeleteError:
        raise CliError(
            f"{name} is not stored in the keyring ({state.name}); see `voicecall secrets list`"
        ) from None
    except KeyringError as exc:
        raise CliError(f"could not delete {name} from {state.name}: {exc}") from None
    if as_json:
        emit_json({"name": name, "deleted": True, "backend": state.name})
    else:
        click.echo(f"Deleted {name} from the keyring.")


@secrets_group.command("list", short_help="Show which secrets are set (never their values).")
@JSON
def list_secrets(as_json: bool) -> None:
    """List every secret name, its environment variable, and whether the environment or the
    keyring holds it. Values are never printed.

    \b
    Examples:
      $ voicecall secrets list
      $ voicecall secrets list --json
    """
    state = _backend_state()
    in_keyring = (
        read_keyring(list(SECRET_KEYS), timeout=PROBE_TIMEOUT_SECONDS) if state.usable else {}
    )
    rows: list[dict[str, Any]] = []
    for name, var in SECRET_KEYS.items():
        rows.append(
            {
                "name": name,
                "envVar": var,
                "inEnv": bool(var and os.environ.get(var)),
                "inKeyring": (name in in_keyring) if state.usable else None,
            }
        )
    if as_json:
        emit_json({"backend": state.name, "usable": state.usable, "secrets": rows})
        return
    width = max(len(name) for name in SECRET_KEYS)
    click.echo(f"{'NAME':<{width}}  {'ENV VAR':<20} {'ENV':<4} KEYRING")
    for row in rows:
        keyring_col = "n/a" if row["inKeyring"] is None else ("set" if row["inKeyring"] else "-")
        click.echo(
            f"{row['name']:<{width}}  {row['envVar'] or '-':<20} "
            f"{'set' if row['inEnv'] else '-':<4} {keyring_col}"
        )
    if not state.usable:
        click.echo(
            f"Note: no usable keyring ({state.reason}); see `voicecall secrets backend`.", err=True
        )


@secrets_group.command("backend", short_help="Show the keyring backend and whether it works.")
@JSON
def backend_info(as_json: bool) -> None:
    """Show the keyring backend in use and whether it works here.

    Exits 1 when no backend works (typical on headless Linux: SSH, systemd, CI) and prints the
    documented fallbacks: environment variables, the config file (0600), or keyrings.alt via
    PYTHON_KEYRING_BACKEND.

    \b
    Examples:
      $ voicecall secrets backend
      $ PYTHON_KEYRING_BACKEND=keyrings.alt.file.PlaintextKeyring voicecall secrets backend
    """
    state = _backend_state()
    disabled = os.environ.get(NO_KEYRING_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if as_json:
        doc: dict[str, Any] = {
            "backend": state.name,
            "usable": state.usable,
            "reason": state.reason,
            "daemonReadsKeyring": not disabled,
        }
        if not state.usable:
            doc["fallback"] = FALLBACK_HELP
        emit_json(doc)
    else:
        click.echo(f"backend: {state.name}")
        click.echo(f"usable:  {'yes' if state.usable else 'no: ' + state.reason}")
        if disabled:
            click.echo(f"note:    {NO_KEYRING_ENV} is set: the daemon does not read the keyring")
        if not state.usable:
            click.echo(FALLBACK_HELP)
    if not state.usable:
        raise SystemExit(1)
