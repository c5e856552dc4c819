"""Exit statuses and the CLI's own errors (SPEC section 4)."""

from __future__ import annotations

from enum import IntEnum

import click

from daemon.errors import RpcCode


class ExitStatus(IntEnum):
    """What `voicecall` exits with."""

    OK = 0
    """The operation succeeded."""
    ERROR = 1
    """The operation failed: unknown call, provider error, timeout."""
    USAGE = 2
    """The command line was wrong (Click's usage errors)."""
    DAEMON_UNREACHABLE = 3
    """No daemon answers and none was started."""
    CTRL_C = 130
    """Interrupted."""


class CliError(click.ClickException):
    """An operation failed; printed as `Error: ...` with exit status 1."""

    exit_code = ExitStatus.ERROR


class DaemonUnreachable(click.ClickException):
    """The daemon is not running and autostart is off or failed."""

    exit_code = ExitStatus.DAEMON_UNREACHABLE


class RemoteUsageError(click.ClickException):
    """The daemon rejected the parameters: a usage problem, exit status 2."""

    exit_code = ExitStatus.USAGE


def exit_status_for_rpc(code: int) -> int:
    """Map a JSON-RPC error code to an exit status."""
    if code == RpcCode.INVALID_PARAMS:
        return ExitStatus.USAGE
    return ExitStatus.ERROR
