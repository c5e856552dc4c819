"""A small blocking JSON-RPC client for the daemon's Unix socket.

Stdlib-only, so the CLI stays fast to start. The MCP server and the tests use it too.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daemon.rpc import protocol
from daemon.rpc.protocol import RpcRemoteError
from daemon.rpc.trust import UntrustedSocketError, check_listener, check_socket_folder


class DaemonUnreachableError(ConnectionError):
    """Nothing answers on the socket."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"daemon not running: cannot connect to {path} ({reason})")
        self.path = path
        self.reason = reason


class RpcClient:
    """One connection to the daemon; requests are answered in order."""

    def __init__(self, path: Path, *, timeout: float | None = 30.0) -> None:
        self.path = Path(path)
        self._ids = itertools.count(1)
        # SPEC section 2: a folder another user made (or can write) is never trusted, and
        # nothing is sent to a listener of another uid. UntrustedSocketError is not a
        # ConnectionError on purpose: it must not read as "no daemon" (and autostart one).
        check_socket_folder(self.path.parent)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._connect(timeout)
            check_listener(self._sock, self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise DaemonUnreachableError(self.path, exc.strerror or type(exc).__name__) from None
        except OSError as exc:
            self._sock.close()
            raise DaemonUnreachableError(self.path, str(exc)) from None
        except UntrustedSocketError:
            self._sock.close()
            raise
        self._file = self._sock.makefile("rb")

    def _connect(self, timeout: float | None) -> None:
        """Connect; a full listen queue (EAGAIN) means busy, not absent: retry until timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self._sock.connect(str(self.path))
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the daemon on {self.path} is too busy to accept") from None
                time.sleep(0.005)

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        try:
            self._file.close()
        finally:
            self._sock.close()

    def settimeout(self, timeout: float | None) -> None:
        """Change how long a read may block."""
        self._sock.settimeout(timeout)

    def _read_message(self) -> dict[str, Any]:
        line = self._file.readline(protocol.MAX_MESSAGE_BYTES + 2)
        if not line:
            raise ConnectionError(f"the daemon closed the connection on {self.path}")
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise ConnectionError("the daemon sent a message that is not a JSON object")
        return msg

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result; raise RpcRemoteError on an error answer."""
        req_id = next(self._ids)
        self._sock.sendall(protocol.encode(protocol.request(method, params, req_id)))
        while True:
            msg = self._read_message()
            if msg.get("id") != req_id:
                continue  # a notification of an earlier subscription
            if "error" in msg:
                err = msg["error"]
                raise RpcRemoteError(
                    int(err.get("code", -32603)), str(err.get("message")), err.get("data")
                )
            return msg.get("result")

    def notifications(self) -> Iterator[dict[str, Any]]:
        """Yield notifications (for example `voicecall.event`) until the daemon closes."""
        while True:
            try:
                msg = self._read_message()
            except ConnectionError:
                return
            if "method" in msg and "id" not in msg:
                yield msg
