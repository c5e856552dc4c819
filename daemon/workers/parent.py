"""The parent of `--workers N`: claims the shared sockets once, runs N workers, keeps them up.

The parent serves nothing itself. It binds the RPC socket (with the same lock and checks as a
single daemon) and hands the listening socket to every worker, which all accept on it; it
reserves the webhook/media port with SO_REUSEPORT (bound, never listening, so it receives no
connection) so every worker can listen on the same port even when `serve.port = 0`. A worker
that dies is started again with the same index, so the same cluster id: it takes its own live
calls back at once (the cluster's restart rules reconcile them; nothing is re-dialled). SIGTERM
or SIGINT, or `daemon.shutdown` on any worker (it signals the parent), stops every worker; the
socket file is removed once the last one has exited. SIGHUP is passed on (each worker reloads);
`daemon reload` on any worker sends the parent SIGHUP after its own reload.

Workers' stderr comes through a pipe and is written to the parent's log by the parent alone
(one log, each line tagged `w<i>`, rotated by one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from daemon.errors import ConfigError
from daemon.paths import Paths
from daemon.rpc.server import RpcServer

logger = logging.getLogger("daemon.workers")

EX_CONFIG = 78
QUICK_DEATH_SECONDS = 5.0
"""A worker that dies sooner than this after its start counts as failing to start."""
QUICK_DEATHS_ALLOWED = 3
"""Consecutive quick deaths of one worker after which the parent gives up and stops all."""
RESTART_DELAY_SECONDS = 0.5


class RawLineFormatter(logging.Formatter):
    """The parent's log format, except for workers' lines, which come formatted already."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "worker_line", False):
            return record.getMessage()
        return super().format(record)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    pump: threading.Thread | None = field(default=None, repr=False)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, not listening: it holds the port (port
    0: picks one) for the workers, which bind the same port with SO_REUSEPORT and listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} for webhooks ({exc.strerror}); another program (or "
            "daemon) uses it: set serve.port to a free port, or 0 for any free port"
        ) from None
    return sock


class Parent:
    """Runs and watches the workers of one `voicecall daemon run --workers N`."""

    def __init__(
        self,
        count: int,
        paths: Paths,
        bind: str,
        port: int,
        worker_argv: Callable[[int, int, int], list[str]],
    ) -> None:
        self.count = count
        self.paths = paths
        self.bind = bind
        self.port = port
        self._argv = worker_argv
        self._workers = [_Worker(i) for i in range(1, count + 1)]
        self._stopping = False
        self._exit = 0
        self._rpc = RpcServer(paths.socket, {})
        self._reserved: socket.socket | None = None
        self._rpc_sock: socket.socket | None = None

    def run(self, rpc_socket: socket.socket | None = None) -> int:
        """Claim the sockets, start the workers, restart those that die, until told to stop."""
        self._rpc.bind(rpc_socket)
        self._rpc_sock = self._rpc._sock
        try:
            self._reserved = reserve_port(self.bind, self.port)
            self.port = self._reserved.getsockname()[1]
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_stop)
            signal.signal(signal.SIGHUP, self._on_hup)
            for worker in self._workers:
                self._spawn(worker)
            logger.info(
                "voicecall daemon: %d workers on port %s, socket %s (pids %s)",
                self.count,
                self.port,
                self.paths.socket,
                ", ".join(str(w.proc.pid) for w in self._workers if w.proc),
            )
            self._watch()
        finally:
            self._stop_all()
            self._reap_all()
            if self._reserved is not None:
                self._reserved.close()
            asyncio.run(self._rpc.stop())  # removes the socket file (ours) and the lock
            logger.info("voicecall daemon stopped (%d workers)", self.count)
        return self._exit

    # ------------------------------------------------------------------ signals

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stopping = True
        self._stop_all()

    def _on_hup(self, signum: int, frame: object) -> None:
        for worker in self._workers:
            if worker.proc is not None and worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGHUP)

    def _stop_all(self) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)

    # ------------------------------------------------------------------ workers

    def _spawn(self, worker: _Worker) -> None:
        assert self._rpc_sock is not None
        fd = self._rpc_sock.fileno()
        env = dict(os.environ)
        for name in (
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
        ):
            env.pop(name, None)  # systemd talks to the parent only
        proc = subprocess.Popen(
            self._argv(worker.index, self.port, fd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(fd,),
            env=env,
            preexec_fn=_die_with_parent,
        )
        worker.proc = proc
        worker.started = time.monotonic()
        assert proc.stdout is not None
        worker.pump = threading.Thread(
            target=_pump, args=(proc.stdout,), name=f"worker-{worker.index}-log", daemon=True
        )
        worker.pump.start()

    def _watch(self) -> None:
        while not self._stopping:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            worker = next((w for w in self._workers if w.proc and w.proc.pid == pid), None)
            if worker is None or worker.proc is None:
                continue
            worker.proc.returncode = os.waitstatus_to_exitcode(status)
            if self._stopping:
                break
            self._restart(worker, worker.proc.returncode)

    def _restart(self, worker: _Worker, code: int) -> None:
        how = f"signal {-code}" if code < 0 else f"status {code}"
        quick = time.monotonic() - worker.started < QUICK_DEATH_SECONDS
        worker.quick_deaths = worker.quick_deaths + 1 if quick else 0
        if code == EX_CONFIG or worker.quick_deaths >= QUICK_DEATHS_ALLOWED:
            logger.error(
                "worker %d (pid %s) exited with %s %s; stopping every worker",
                worker.index,
                worker.proc.pid if worker.proc else "?",
                how,
                "(a configuration error)"
                if code == EX_CONFIG
                else f"{worker.quick_deaths} times right after starting",
            )
            self._exit = code if code > 0 else 1
            self._stopping = True
            return
        logger.warning(
            "worker %d (pid %s) exited with %s; starting it again (its calls are "
            "taken back under the restart rules, never re-dialled)",
            worker.index,
            worker.proc.pid if worker.proc else "?",
            how,
        )
        time.sleep(RESTART_DELAY_SECONDS * worker.quick_deaths)
        if not self._stopping:
            self._spawn(worker)

    def _reap_all(self) -> None:
        for worker in self._workers:
            proc = worker.proc
            if proc is None:
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                logger.error(
                    "worker %d (pid %s) did not stop in 30 s; killing it", worker.index, proc.pid
                )
                proc.kill()
                proc.wait()
            if worker.pump is not None:
                worker.pump.join(timeout=5)


def _pump(stream: IO[bytes]) -> None:
    """Copy a worker's output into the parent's log, line by line (already formatted)."""
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            record = logger.makeRecord(
                logger.name,
                logging.INFO,
                __file__,
                0,
                "%s",
                (line,),
                None,
                extra={"worker_line": True},
            )
            for handler in logging.getLogger().handlers:  # the worker filtered by level
                handler.handle(record)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the parent dies (Linux; `kill -9` of it)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
