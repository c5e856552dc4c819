"""Run the real daemon and the real CLI as subprocesses, on a short temporary socket path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from daemon.rpc.client import DaemonUnreachableError, RpcClient
from daemon.rpc.protocol import RpcRemoteError
from daemon.rpc.trust import UntrustedSocketError

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds.

    `cond and value` predicates are typed as such: the falsy `False`/`None` is never returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value  # type: ignore[return-value]  # truthy, so not False/None
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def short_home() -> Path:
    """A temporary VOICECALL_HOME short enough for a Unix socket path (108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="vc-", dir="/tmp"))


class DaemonHarness:
    """One daemon process with its own home, config and socket."""

    def __init__(self, home: Path, config: str | None = None) -> None:
        self.home = home
        self.socket = home / "run" / "daemon.sock"
        self.log = home / "daemon-test.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if config is not None:
            (home / "config.toml").write_text(config)
        self.env = {
            **os.environ,
            "VOICECALL_HOME": str(home),
            "VOICECALL_NO_KEYRING": "1",
            "PYTHONUNBUFFERED": "1",
        }
        for key in (
            "VOICECALL_CONFIG",
            "VOICECALL_SOCKET",
            "XDG_RUNTIME_DIR",
            "VOICECALL_NO_AUTOSTART",
        ):
            self.env.pop(key, None)

    def write_config(self, text: str) -> None:
        """Replace the config file."""
        (self.home / "config.toml").write_text(text)

    def start(self, *, expect_ready: bool = True, timeout: float = 20.0) -> None:
        """Start `python -m daemon` and wait until it answers daemon.status."""
        out = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--socket", str(self.socket)],
            env=self.env,
            stdout=out,
            stderr=out,
            cwd=REPO,
        )
        out.close()
        if not expect_ready:
            return

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                with RpcClient(self.socket, timeout=2.0) as client:
                    client.call("daemon.status")
                return True
            except (DaemonUnreachableError, ConnectionError, RpcRemoteError, TimeoutError):
                return False  # TimeoutError: listening, but still restoring calls

        wait_for(ready, timeout, message="the daemon to answer")

    def log_text(self) -> str:
        """The daemon's stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, timeout: float | None = 30.0) -> RpcClient:
        """A new RPC connection."""
        return RpcClient(self.socket, timeout=timeout)

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = 30.0
    ) -> Any:
        """One RPC call on a fresh connection."""
        with self.client(timeout) as client:
            return client.call(method, params)

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 60.0, socket_flag: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `voicecall` entry point."""
        argv = [sys.executable, "-m", "voicecall_cli"]
        if socket_flag:
            argv += ["--socket", str(self.socket)]
        return subprocess.run(
            argv + list(args),
            env=self.env,
            input=input,
            text=True,
            capture_output=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
        )

    def cli_json(self, *args: str) -> Any:
        """Run a CLI command with --json and parse its stdout."""
        done = self.cli(*args, "--json")
        assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
        return json.loads(done.stdout)

    def call_record(self, call_id: str) -> dict[str, Any]:
        """The call record, via RPC."""
        result = self.rpc("voicecall.status", {"callId": call_id})
        assert result["found"], result
        call: dict[str, Any] = result["call"]
        return call

    def call_events(self, call_id: str, since: int = 1000) -> list[dict[str, Any]]:
        """Every stored event of one call, oldest first: the `voicecall.tail` backlog (up to
        `since` events), read off the notifications that replay it."""
        with self.client() as client:
            backlog = client.call("voicecall.tail", {"callId": call_id, "since": since})["backlog"]
            events: list[dict[str, Any]] = []
            if backlog:
                for message in client.notifications():
                    events.append(message["params"]["event"])
                    if len(events) == backlog:
                        break
        return events

    def wait_streams_bound(self, call_ids: list[str], timeout: float = 30.0) -> None:
        """Poll the daemon's log until every call's media stream has bound to it (the media
        plane logs `bound to call <id>` once a stream's `start` is accepted)."""
        wait_for(
            lambda: all(f"bound to call {i}" in self.log_text() for i in call_ids),
            timeout,
            message="every stream to bind",
        )

    def wait_state(self, call_id: str, *states: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll until the call is in one of `states`."""
        return wait_for(
            lambda: (c := self.call_record(call_id))["state"] in states and c,
            timeout,
            message=f"call {call_id} to reach {states}",
        )

    def kill9(self) -> None:
        """SIGKILL the daemon (no cleanup at all)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Stop the daemon cleanly, or kill it (also one the CLI autostarted)."""
        if self.proc is None or self.proc.poll() is not None:
            try:
                self.rpc("daemon.shutdown", timeout=5.0)
                wait_for(lambda: not self.socket.exists(), 10, message="autostarted daemon")
            except (
                DaemonUnreachableError,
                ConnectionError,
                RpcRemoteError,
                OSError,
                UntrustedSocketError,
                AssertionError,
            ):
                pass
            return
        try:
            self.rpc("daemon.shutdown", timeout=5.0)
            self.proc.wait(10)
        except (
            DaemonUnreachableError,
            ConnectionError,
            RpcRemoteError,
            OSError,
            UntrustedSocketError,
            subprocess.TimeoutExpired,
        ):
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self) -> None:
        """Stop and remove the home folder."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


FAST_MOCK = """
[serve]
port = 0

[mock]
answer_delay_ms = 30
"""


# ---------------------------------------------------------------------- async test helpers
# Provider tests run simulators on the test's event loop, so the blocking harness calls go
# through a thread.


async def start_async(make_daemon: Callable[..., DaemonHarness], text: str) -> DaemonHarness:
    """Start a daemon without blocking the simulators' event loop."""
    d = make_daemon(text, start=False)
    d.env.pop("OPENAI_API_KEY", None)  # vendor keys come from the test's config only
    await asyncio.to_thread(d.start)
    return d


async def rpc_async(d: DaemonHarness, method: str, params: dict[str, Any] | None = None) -> Any:
    """One RPC call, off the event loop."""
    return await asyncio.to_thread(d.rpc, method, params)


async def until_async(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float = 10.0,
    what: str = "it",
    interval: float = 0.01,
) -> T:
    """Poll a cheap, local condition (a simulator's or fake's state) on the event loop; return
    its first truthy value, fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return value


async def call_id_of(d: DaemonHarness, provider_call_id: str) -> str:
    """Our call id of the (one) call the provider knows as `provider_call_id`."""
    listed = (await rpc_async(d, "voicecall.list", {}))["calls"]
    (found,) = [c for c in listed if c["providerCallId"] == provider_call_id]
    return str(found["callId"])


async def until_state_async(d: DaemonHarness, call_id: str, *states: str) -> dict[str, Any]:
    """Poll the call record until it reaches one of `states` (15 s)."""
    return await asyncio.to_thread(d.wait_state, call_id, *states, timeout=15)


def query(url: str) -> dict[str, str]:
    """The query parameters of a URL, first values."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
