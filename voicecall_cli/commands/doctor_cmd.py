"""`voicecall doctor`: check config, secrets, exposure, port, daemon and provider API at once.

The checks live in `voicecall_cli.doctor_checks`, imported inside the command together with
everything heavy they need (config loader, keyring, provider SDKs), so that listing commands
stays fast. The doctor never starts the daemon.
"""

from __future__ import annotations

import click

from voicecall_cli.context import CliContext, pass_ctx
from voicecall_cli.errors import ExitStatus
from voicecall_cli.output import emit_json, style

COLOURS = {"OK": "green", "WARN": "yellow", "FAIL": "red"}


def _keyring_probe() -> tuple[str, bool, str]:
    """The active keyring backend, probed with a deadline (shared with `secrets backend`)."""
    from voicecall_cli.commands.secrets_cmd import _backend_state

    state = _backend_state()
    return state.name, state.usable, state.reason


@click.command("doctor", short_help="Check the setup and say how to fix what is wrong.")
@click.option("--offline", is_flag=True, help="Do not contact the provider's API (no network).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print one JSON document: {"ok", "checks": [{"id", "status", "message", "fix"}]}.',
)
@pass_ctx
def doctor_cmd(ctx: CliContext, offline: bool, as_json: bool) -> None:
    """Check everything a working setup needs, one line per check.

    In order: the config file (every wrong or missing value), the keyring backend, each secret
    the configuration uses (and where it comes from; values are never shown), public exposure
    of the webhook and of the media-stream path, the daemon (asked over its socket, never
    started: its store and whether its load lets it take new calls), whether
    serve.bind:serve.port can be bound, and the provider's API with the configured
    credentials (skipped with --offline and for the mock provider).

    Each line reads `OK|WARN|FAIL <check>: <what> — <fix>`. Exits 1 when any check fails.

    \b
    Examples:
      $ voicecall doctor
      $ voicecall doctor --offline
      $ voicecall doctor --json | jq '.checks[] | select(.status != "OK")'
    """
    from voicecall_cli.doctor_checks import run_checks

    checks = run_checks(ctx.paths, offline=offline, keyring_probe=_keyring_probe)
    failed = any(check.status == "FAIL" for check in checks)
    if as_json:
        emit_json({"ok": not failed, "checks": [check.to_wire() for check in checks]})
    else:
        for check in checks:
            line = check.line()
            click.echo(
                style(check.status, fg=COLOURS[check.status], bold=True) + line[len(check.status) :]
            )
    if failed:
        raise SystemExit(ExitStatus.ERROR)
