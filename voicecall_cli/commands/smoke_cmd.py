"""`voicecall smoke`: check a real provider setup end to end, one line per step."""

from __future__ import annotations

import time
from typing import Any

import click

from voicecall_cli.context import CliContext, call_or_fail, pass_ctx
from voicecall_cli.errors import ExitStatus
from voicecall_cli.output import emit_json, style

COLOURS = {"OK": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "cyan"}


@click.command("smoke", short_help="Check a real provider setup, optionally with a real call.")
@click.option("--to", required=True, metavar="E164", help="The number to call (your phone).")
@click.option(
    "--mode",
    type=click.Choice(["notify", "conversation"]),
    default="notify",
    show_default=True,
    help="notify: a short message, then hang up. conversation: also one turn of "
    "speech recognition (say something), then hang up.",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Really place the call (a real, billed call). Without it: a dry run.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=10),
    default=180.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the call may take from dialling to its end.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"ok", "dryRun", "callId", "steps": [{"id", "status", "message", "fix"}]}.',
)
@pass_ctx
def smoke_cmd(
    ctx: CliContext, to: str, mode: str, yes: bool, timeout: float, as_json: bool
) -> None:
    """Check the whole path a real call takes, one line per step, and stop at the first
    failure with how to fix it.

    Steps: the config (every problem), a real provider (twilio, telnyx, plivo), its secrets,
    its API with those credentials, the daemon (started if needed) and the webhook URL, which
    must answer an unsigned request with our daemon's 401 (from this machine: through the
    public address when there is one). That much is the dry run, placing no call.

    With --yes (your confirmation that a real, billed call may be placed) it then calls --to,
    waits for the provider's signed status callbacks to arrive and pass verification, and
    for the call to end. Exit status 0 when every step passed, 1 otherwise.

    \b
    Examples:
      $ voicecall smoke --to +15550001234
      $ voicecall smoke --to +15550001234 --yes
      $ voicecall smoke --to +15550001234 --mode conversation --yes --json
    """
    from voicecall_cli.doctor_checks import Check
    from voicecall_cli.smoke import SmokeRun, StepFailed

    def show(check: Check) -> None:
        if as_json:
            return
        line = check.line()
        click.echo(
            style(check.status, fg=COLOURS.get(check.status, "white"), bold=True)
            + line[len(check.status) :]
        )

    run = SmokeRun(ctx.paths, to, mode, show)
    ok = True
    try:
        run.check_setup()
        status = ctx.rpc("daemon.status")
        url = run.check_daemon(status)
        run.check_webhook(url)
        if not yes:
            run.step(
                Check(
                    "call",
                    "SKIP",
                    f"dry run: no call placed to {to}",
                    f"`voicecall smoke --to {to} --yes` places a real call",
                )
            )
        else:
            _call(ctx, run, timeout)
    except StepFailed:
        ok = False
    if as_json:
        emit_json(
            {
                "ok": ok,
                "dryRun": not yes,
                "callId": run.call_id,
                "steps": [c.to_wire() for c in run.checks],
            }
        )
    if not ok:
        raise SystemExit(ExitStatus.ERROR)


def _call(ctx: CliContext, run: Any, timeout: float) -> None:
    """Subscribe to events first, then dial on a second connection, then follow."""
    deadline = time.monotonic() + timeout
    with ctx.connect(timeout=30.0) as events:
        call_or_fail(events, "voicecall.tail", {"since": 0})

        def initiate(params: dict[str, Any]) -> Any:
            with ctx.connect(timeout=60.0) as client:
                return client.call("voicecall.initiate", params)

        run.place_call(events, initiate, deadline)
