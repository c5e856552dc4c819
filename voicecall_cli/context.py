"""The state one CLI invocation carries: paths, flags, and the way to reach the daemon."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from daemon.paths import Paths, resolve_paths
from daemon.rpc.client import DaemonUnreachableError, RpcClient
from daemon.rpc.protocol import RpcRemoteError
from voicecall_cli.errors import CliError, DaemonUnreachable, RemoteUsageError, exit_status_for_rpc
from voicecall_cli.progress import waiting

if TYPE_CHECKING:
    import subprocess

READY_TIMEOUT_SECONDS = 15.0


@dataclass(slots=True)
class CliContext:
    """Click's `ctx.obj` for every command."""

    paths: Paths
    config_flag: str | None
    socket_flag: str | None
    autostart: bool

    @classmethod
    def create(cls, config: str | None, socket: str | None, no_autostart: bool) -> CliContext:
        """Resolve paths from flags and environment."""
        autostart = not no_autostart and os.environ.get("VOICECALL_NO_AUTOSTART") not in (
            "1",
            "true",
            "yes",
        )
        return cls(resolve_paths(config=config, socket=socket), config, socket, autostart)

    def daemon_argv(self) -> list[str]:
        """The command line that runs the daemon in the foreground with our paths."""
        argv = [sys.executable, "-m", "daemon", "--socket", str(self.paths.socket)]
        if self.config_flag or os.environ.get("VOICECALL_CONFIG"):
            argv += ["--config", str(self.paths.config)]
        return argv

    def connect(self, *, timeout: float | None = 30.0, autostart: bool | None = None) -> RpcClient:
        """Connect to the daemon, starting it first when allowed."""
        try:
            return RpcClient(self.paths.socket, timeout=timeout)
        except DaemonUnreachableError as exc:
            if not (self.autostart if autostart is None else autostart):
                raise DaemonUnreachable(
                    f"{exc}; start it with `voicecall daemon start` "
                    "(autostart is off: --no-autostart or VOICECALL_NO_AUTOSTART)"
                ) from None
        self.start_daemon()
        return RpcClient(self.paths.socket, timeout=timeout)

    def start_daemon(self) -> int:
        """Start the daemon in the background and wait until it answers; return its pid."""
        import subprocess  # only this path needs it; keep start-up fast

        # Private from the first byte (SPEC section 2), also what this process creates.
        self.paths.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = self.paths.log_file
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            offset = os.fstat(out).st_size
            # The daemon rotates the log itself; what it prints before its logging is set up
            # (or outside it) lands here too.
            proc = subprocess.Popen(
                [*self.daemon_argv(), "--log-file", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                close_fds=True,
                umask=0o077,
            )
        finally:
            os.close(out)
        with waiting(f"starting the voicecall daemon ({self.paths.socket})"):
            return self._await_ready(proc, log, offset)

    def _await_ready(self, proc: subprocess.Popen[bytes], log: Path, offset: int) -> int:
        """Poll until the daemon we started answers; its pid."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                racer = self._running_pid()  # another CLI may have started one just before us
                if racer is not None:
                    return racer
                raise DaemonUnreachable(
                    f"the daemon exited with status {code} while starting"
                    + _new_errors(log, offset)
                    + f"\n(log: {log}; `voicecall daemon run` runs it in the foreground)"
                )
            try:
                with RpcClient(self.paths.socket, timeout=2.0) as client:
                    client.call("daemon.status")
                return proc.pid
            except (DaemonUnreachableError, ConnectionError, RpcRemoteError, TimeoutError):
                time.sleep(0.02)  # not listening yet, or still restoring calls: not an answer
        raise DaemonUnreachable(
            f"the daemon did not answer on {self.paths.socket} within "
            f"{READY_TIMEOUT_SECONDS:.0f}s; see {log}"
        )

    def _running_pid(self) -> int | None:
        """The pid of a daemon answering on our socket, if one does."""
        try:
            with RpcClient(self.paths.socket, timeout=2.0) as client:
                return int(client.call("daemon.status")["pid"])
        except (DaemonUnreachableError, ConnectionError, RpcRemoteError, TimeoutError):
            return None

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = 30.0
    ) -> Any:
        """Call one method and return its result; errors become CLI errors."""
        with self.connect(timeout=timeout) as client:
            return call_or_fail(client, method, params)


def call_or_fail(client: RpcClient, method: str, params: dict[str, Any] | None) -> Any:
    """Call a method; map an error answer to the right CLI exception."""
    try:
        return client.call(method, params)
    except RpcRemoteError as exc:
        if exit_status_for_rpc(exc.code) == 2:
            raise RemoteUsageError(exc.message) from None
        raise CliError(exc.message) from None
    except TimeoutError:
        raise CliError(f"the daemon did not answer {method} in time") from None
    except ConnectionError as exc:  # the daemon stopped or crashed mid-request
        raise CliError(
            f"{exc} during {method}; its outcome is unknown: check "
            "`voicecall status` and `voicecall daemon logs`"
        ) from None


def _new_errors(log: Path, offset: int) -> str:
    """The ERROR lines the daemon logged since `offset`, without their log prefix."""
    try:
        with open(log, "rb") as handle:
            if os.fstat(handle.fileno()).st_size < offset:
                offset = 0  # rotated meanwhile: the live file is new
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.split(" ERROR daemon: ", 1)[-1] for ln in text.splitlines() if " ERROR " in ln]
    return (":\n" + "\n".join(lines)) if lines else ""


pass_ctx = click.make_pass_decorator(CliContext)
