"""`voicecall daemon start|stop|restart|status|run|logs`."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from daemon.rpc.client import DaemonUnreachableError, RpcClient
from daemon.rpc.protocol import RpcRemoteError
from voicecall_cli import output
from voicecall_cli.context import CliContext, pass_ctx
from voicecall_cli.errors import CliError, ExitStatus

STOP_TIMEOUT_SECONDS = 15.0


def _status(ctx: CliContext) -> dict[str, Any] | None:
    try:
        with RpcClient(ctx.paths.socket, timeout=5.0) as client:
            result: dict[str, Any] = client.call("daemon.status")
            return result
    except (DaemonUnreachableError, ConnectionError, RpcRemoteError, TimeoutError):
        return None


@click.group("daemon", short_help="Manage the background daemon.")
def daemon_group() -> None:
    """Start, stop and inspect the daemon that owns webhooks, media streams and calls.

    \b
    Examples:
      $ voicecall daemon start
      $ voicecall daemon status --json
      $ voicecall daemon logs -n 50
    """


@daemon_group.command("start", short_help="Start the daemon in the background.")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon status as JSON.")
@pass_ctx
def start_cmd(ctx: CliContext, as_json: bool) -> None:
    """Start the daemon in the background (nothing happens if it already runs).

    \b
    Examples:
      $ voicecall daemon start
    """
    status = _status(ctx)
    if status is None:
        ctx.start_daemon()
        status = _status(ctx)
        if status is None:
            raise CliError(f"the daemon started but does not answer on {ctx.paths.socket}")
        message = f"voicecall daemon started (pid {status['pid']}) on {status['socket']}"
    else:
        message = f"voicecall daemon already running (pid {status['pid']})"
    if as_json:
        output.emit_json(status)
    else:
        click.echo(message)


def _stop(ctx: CliContext) -> bool:
    status = _status(ctx)
    if status is None:
        return False
    try:
        with RpcClient(ctx.paths.socket, timeout=5.0) as client:
            client.call("daemon.shutdown")
    except (DaemonUnreachableError, ConnectionError):
        pass
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    pid = int(status["pid"])
    while time.monotonic() < deadline:
        if not _alive(pid) and not ctx.paths.socket.exists():
            return True
        time.sleep(0.02)
    raise CliError(f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT_SECONDS:.0f}s; "
                   f"kill it with `kill {pid}`")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@daemon_group.command("stop", short_help="Stop the daemon.")
@pass_ctx
def stop_cmd(ctx: CliContext) -> None:
    """Stop the daemon cleanly. Live calls stay in the store and are reconciled at next start.

    \b
    Examples:
      $ voicecall daemon stop
    """
    click.echo("voicecall daemon stopped" if _stop(ctx) else "voicecall daemon was not running")


@daemon_group.command("restart", short_help="Restart the daemon.")
@pass_ctx
def restart_cmd(ctx: CliContext) -> None:
    """Stop the daemon if it runs, then start it again.

    \b
    Examples:
      $ voicecall daemon restart
    """
    _stop(ctx)
    pid = ctx.start_daemon()
    click.echo(f"voicecall daemon restarted (pid {pid})")


@daemon_group.command("status", short_help="Show whether the daemon runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def status_cmd(ctx: CliContext, as_json: bool) -> None:
    """Show the daemon's pid, provider, webhook URL and active calls; exit 3 if it is down.

    \b
    Examples:
      $ voicecall daemon status --json
    """
    status = _status(ctx)
    if status is None:
        if as_json:
            output.emit_json({"running": False})
        else:
            click.echo(f"voicecall daemon is not running (socket {ctx.paths.socket})", err=True)
        sys.exit(ExitStatus.DAEMON_UNREACHABLE)
    if as_json:
        output.emit_json(status)
        return
    click.echo(f"running   pid {status['pid']}, version {status['version']}\n"
               f"provider  {status['provider']}\n"
               f"webhook   {status['webhookUrl']}\n"
               f"public    {status.get('publicUrl') or '-'}\n"
               f"calls     {status['activeCalls']} active\n"
               f"socket    {status['socket']}")


@daemon_group.command("run", short_help="Run the daemon in the foreground.")
@pass_ctx
def run_cmd(ctx: CliContext) -> None:
    """Run the daemon in the foreground, logging to stderr (for systemd and debugging).

    \b
    Examples:
      $ voicecall daemon run
    """
    argv = ctx.daemon_argv()
    os.execv(argv[0], argv)  # noqa: S606 - replace this process with the daemon


@daemon_group.command("logs", short_help="Print the daemon log.")
@click.option("-n", "lines", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many of the last lines to print.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@pass_ctx
def logs_cmd(ctx: CliContext, lines: int, follow: bool) -> None:
    """Print the last lines of the daemon log (when started in the background).

    \b
    Examples:
      $ voicecall daemon logs -n 100
      $ voicecall daemon logs --follow
    """
    log = ctx.paths.log_file
    if not log.exists():
        raise CliError(f"no daemon log at {log}; the daemon has not been started in the "
                       "background (under systemd, use `journalctl --user -u voicecall`)")
    with open(log, "rb") as handle:
        tail = handle.read().splitlines()[-lines:]
        for line in tail:
            click.echo(line.decode(errors="replace"))
        while follow:
            chunk = handle.readline()
            if chunk:
                click.echo(chunk.decode(errors="replace").rstrip("\n"))
            else:
                time.sleep(0.2)


def register(cli: click.Group) -> None:
    """Add the daemon group to the root group."""
    cli.add_command(daemon_group)
