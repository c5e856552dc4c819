"""`voicecall daemon start|stop|restart|reload|status|run|logs`."""

from __future__ import annotations

import fcntl
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from daemon.rpc.client import DaemonUnreachableError, RpcClient
from daemon.rpc.protocol import RpcRemoteError
from voicecall_cli import output
from voicecall_cli.context import CliContext, pass_ctx
from voicecall_cli.errors import CliError, DaemonUnreachable, ExitStatus

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
    lock_file = status.get("storeLock")  # None: the store's claim is not a file (PostgreSQL)
    lock = Path(lock_file) if isinstance(lock_file, str) else None
    while time.monotonic() < deadline:
        # Stopped = its socket is gone and its store lock is free. Not `kill(pid, 0)`: a daemon
        # that exited but that its parent has not reaped yet (a zombie) still counts as alive.
        if not ctx.paths.socket.exists() and (_lock_free(lock) if lock else not _alive(pid)):
            return True
        time.sleep(0.02)
    raise CliError(
        f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT_SECONDS:.0f}s; "
        f"kill it with `kill {pid}`"
    )


def _lock_free(lock: Path) -> bool:
    """True when no process holds the store lock (the daemon released it, or is gone)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing also drops our probe's lock
    return True


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs. An exited process its parent has not reaped yet (a
    zombie: a daemon started by a supervisor or a test harness) does not: on Linux /proc says
    so; elsewhere only `kill(pid, 0)` is available, which counts it as alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return False  # /proc is there and the process is not
    except OSError:
        pass
    else:
        fields = stat.rsplit(")", 1)[-1].split()
        return not fields or fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@daemon_group.command("stop", short_help="Stop the daemon.")
@click.option("--json", "as_json", is_flag=True, help='Print {"stopped": true|false}.')
@pass_ctx
def stop_cmd(ctx: CliContext, as_json: bool) -> None:
    """Stop the daemon cleanly. Live calls stay in the store and are reconciled at next start.

    \b
    Examples:
      $ voicecall daemon stop
    """
    stopped = _stop(ctx)
    if as_json:
        output.emit_json({"stopped": stopped})
    else:
        click.echo("voicecall daemon stopped" if stopped else "voicecall daemon was not running")


def _validate_config(ctx: CliContext, action: str) -> None:
    """Refuse to go on with a config the daemon would refuse to start with."""
    from daemon.config.loader import load_config
    from daemon.errors import ConfigError

    try:
        load_config(ctx.paths)
    except ConfigError as exc:
        raise CliError(
            "\n".join(
                [
                    f"not {action}: {exc.message}; the running daemon (if any) was left alone:",
                    *(f"  - {p}" for p in exc.problems if p != exc.message),
                ]
            )
        ) from None


@daemon_group.command("restart", short_help="Restart the daemon.")
@click.option("--json", "as_json", is_flag=True, help='Print {"pid": N}.')
@pass_ctx
def restart_cmd(ctx: CliContext, as_json: bool) -> None:
    """Check the config, then stop the daemon if it runs and start it again.

    A config the new daemon would refuse is reported (every problem) before anything is
    stopped, so a broken edit never leaves you without a daemon. Keys that `daemon reload`
    cannot change (serve.*, store, provider, ...) need this.

    \b
    Examples:
      $ voicecall daemon restart
    """
    _validate_config(ctx, "restarted")
    _stop(ctx)
    pid = ctx.start_daemon()
    if as_json:
        output.emit_json({"pid": pid})
    else:
        click.echo(f"voicecall daemon restarted (pid {pid})")


@daemon_group.command("reload", short_help="Re-read the config without dropping calls.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"reloaded", "changed", "needsRestart", "warnings"}.',
)
@pass_ctx
def reload_cmd(ctx: CliContext, as_json: bool) -> None:
    """Make the running daemon re-read its config file; live calls continue.

    The whole file is checked first: with any problem nothing changes, every problem is
    listed, and the daemon keeps the config it had. Keys that need a restart (serve.*, store,
    provider and the others listed in docs/config.md) are reported and keep their old values
    until `voicecall daemon restart`. Sending SIGHUP to the daemon does the same. With no
    daemon running it only checks the file (exit 0 when it is valid).

    \b
    Examples:
      $ voicecall config set inbound_policy open && voicecall daemon reload
      $ voicecall daemon reload --json
    """
    try:
        client = ctx.connect(timeout=30.0, autostart=False)
    except DaemonUnreachable:
        # Nothing runs the old config, so there is nothing to bring up to date: a success, so
        # that `config set ... && voicecall daemon reload` works whether a daemon runs or not.
        _validate_config(ctx, "reloaded")
        if as_json:
            output.emit_json({"reloaded": False, "running": False})
        else:
            click.echo(
                f"no daemon runs on {ctx.paths.socket}; the next one reads the config "
                "file as it is",
                err=True,
            )
        return
    with client:
        try:
            result = client.call("daemon.reload")
        except RpcRemoteError as exc:
            problems = (exc.data.get("details") or {}).get("problems") or [exc.message]
            raise CliError(
                "\n".join(
                    [
                        f"config not reloaded: {len(problems)} problem"
                        f"{'s' if len(problems) != 1 else ''} in {ctx.paths.config}; "
                        "the daemon keeps its current config:",
                        *(f"  - {p}" for p in problems),
                    ]
                )
            ) from None
        except (ConnectionError, TimeoutError) as exc:
            raise CliError(f"{exc} during daemon.reload; check `voicecall daemon logs`") from None
    if as_json:
        output.emit_json(result)
        return
    for warning in result.get("warnings", []):
        click.echo(f"Warning: {warning}", err=True)
    if result["needsRestart"]:
        click.echo(
            "Warning: not applied until `voicecall daemon restart`: "
            + ", ".join(result["needsRestart"]),
            err=True,
        )
    if result["changed"]:
        click.echo("config reloaded; applied: " + ", ".join(result["changed"]))
    else:
        click.echo(
            "config reloaded; nothing to apply"
            + (" without a restart" if result["needsRestart"] else "")
        )


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
    load = status.get("loopLoad", 0)
    projected = status.get("loopLoadProjected", load)
    counted = (
        f" ({projected:.0%} counting the calls taken since)" if projected >= load + 0.005 else ""
    )
    click.echo(
        f"running   pid {status['pid']}, version {status['version']}\n"
        f"provider  {status['provider']}\n"
        f"webhook   {status['webhookUrl']}\n"
        f"public    {status.get('publicUrl') or '-'}\n"
        f"calls     {status['activeCalls']} active\n"
        f"loop      {load:.0%} busy over the last 5 s{counted}\n"
        f"socket    {status['socket']}"
    )
    fault = status.get("storeFault")
    if fault:
        click.echo(
            f"store     FAULT since {fault['since']}: {fault['error']} (webhooks get 503 "
            "and commands fail until it is fixed: free disk space, check the disk)"
        )
    worker, handoff = status.get("worker"), status.get("handoff")
    if worker:
        click.echo(f"worker    w{worker['index']} (pid {worker['pid']}) answered")
    if handoff:
        given, taken, relayed = handoff["handedOver"], handoff["adopted"], handoff["relayed"]
        click.echo(
            f"handoff   to siblings {given['media']} streams, {given['webhook']} webhooks; "
            f"from siblings {taken['media']} streams, {taken['webhook']} webhooks; "
            f"relayed {relayed['media']} streams, {relayed['webhook']} webhooks"
        )


@daemon_group.command("run", short_help="Run the daemon in the foreground.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes sharing the ports (default: serve.workers); above 1 needs "
    'store = "postgresql://...".',
)
@pass_ctx
def run_cmd(ctx: CliContext, workers: int | None) -> None:
    """Run the daemon in the foreground, logging to stderr (for systemd and debugging).

    With --workers N (N > 1) this process starts N worker daemons on the shared PostgreSQL
    store, all serving one socket and one webhook port, and restarts any that dies.

    \b
    Examples:
      $ voicecall daemon run
      $ voicecall daemon run --workers 2
    """
    argv = ctx.daemon_argv() + ([] if workers is None else ["--workers", str(workers)])
    os.execv(argv[0], argv)  # noqa: S606 - replace this process with the daemon


@daemon_group.command("logs", short_help="Print the daemon log.")
@click.option(
    "-n",
    "lines",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many of the last lines to print.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per line: {"time", "level", "logger", "message", "line"}.',
)
@pass_ctx
def logs_cmd(ctx: CliContext, lines: int, follow: bool, as_json: bool) -> None:
    """Print the last lines of the daemon log (when started in the background).

    \b
    Examples:
      $ voicecall daemon logs -n 100
      $ voicecall daemon logs --follow
      $ voicecall daemon logs --json | jq 'select(.level == "ERROR")'
    """
    log = ctx.paths.log_file
    if not log.exists():
        raise CliError(
            f"no daemon log at {log}; the daemon has not been started in the "
            "background (under systemd, use `journalctl --user -u voicecall`)"
        )

    def show(raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\n")
        click.echo(output.json_text(log_record(text)) if as_json else text)

    handle = open(log, "rb")  # noqa: SIM115 - reopened when the daemon rotates the log
    try:
        for line in handle.read().splitlines()[-lines:]:
            show(line)
        while follow:
            chunk = handle.readline()
            if chunk:
                show(chunk)
            elif _rotated(log, handle.fileno()):
                # The daemon rotated it (10 MiB): what is left of the old file was read; go
                # on with the new live file from its start.
                handle.close()
                handle = open(log, "rb")  # noqa: SIM115
            else:
                time.sleep(0.2)
    finally:
        handle.close()


def _rotated(log: Path, fd: int) -> bool:
    """Whether `log` is now another file than the one open on `fd`."""
    try:
        return os.stat(log).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False  # between the rename and the new file: look again shortly


_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ([A-Z]+) (?:(w\d+) )?([\w.]+): (.*)$"
)


def log_record(line: str) -> dict[str, Any]:
    """One daemon log line as JSON; a line of another shape (a traceback) keeps only `line`.
    `worker` is the `w<i>` tag of a line written by one of `--workers N` (else null)."""
    match = _LOG_LINE.match(line)
    if match is None:
        return {
            "time": None,
            "level": None,
            "logger": None,
            "message": None,
            "worker": None,
            "line": line,
        }
    stamp, level, worker, name, message = match.groups()
    return {
        "time": stamp,
        "level": level,
        "logger": name,
        "message": message,
        "worker": worker,
        "line": line,
    }
