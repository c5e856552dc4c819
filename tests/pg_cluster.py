"""A real PostgreSQL server for the tests: `VOICECALL_TEST_PG_URL`, or a throwaway cluster.

With `VOICECALL_TEST_PG_URL` set (`.ci/run` starts a server and sets it), that server is used; its
role must be allowed to create databases. Otherwise, when PostgreSQL's programs are installed
(Debian: `apt-get install postgresql`), a cluster is made with `initdb` in a temporary folder
(trust authentication, loopback only, a free port, its Unix socket in that folder) and removed at
the end of the session. PostgreSQL refuses to run as root, so as root it runs as the `postgres`
user the Debian package creates. Each test gets a database of its own.

`fsync` is off in a throwaway cluster: the tests kill voicecall daemons, never the server, so the
server's own crash safety is not what they measure, and a busy CI machine is spared the flushes.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

URL_ENV = "VOICECALL_TEST_PG_URL"


class Unavailable(Exception):
    """No PostgreSQL server can be had here; the message says why (the tests skip with it)."""


def _find(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{program}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgServer:
    """A reachable server and how to make databases on it."""

    admin_url: str
    """A URL whose role may CREATE DATABASE."""
    folder: Path | None = None
    """The throwaway cluster's folder (None for an external server)."""
    run_as: str | None = None
    pg_ctl: str | None = None
    options: str = ""
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _made: list[str] = field(default_factory=list)

    def url_for(self, database: str) -> str:
        """The admin URL pointed at another database."""
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def new_database(self) -> str:
        """Create an empty database; return its URL."""
        import asyncio

        import asyncpg

        name = f"vc_test_{os.getpid()}_{next(self._names)}"

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_url, timeout=30)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        self._made.append(name)
        return self.url_for(name)

    def _drop_made(self) -> None:
        import asyncio

        import asyncpg

        async def drop() -> None:
            conn = await asyncpg.connect(self.admin_url, timeout=30)
            try:
                for name in self._made:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        if self._made:
            with contextlib.suppress(Exception):
                asyncio.run(drop())

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.folder is not None and self.pg_ctl is not None, "not a throwaway cluster"
        return subprocess.run(
            _as(self.run_as, [self.pg_ctl, "-D", str(self.folder / "data"), *args]),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    def pause(self) -> None:
        """Shut the server down (fast: sessions are terminated), as a restart or crash would."""
        done = self._ctl("-m", "fast", "-w", "stop")
        assert done.returncode == 0, done.stderr

    def resume(self) -> None:
        """Start the server again on the same port, with the same data."""
        assert self.folder is not None
        done = self._ctl(
            "-l", str(self.folder / "server.log"), "-o", self.options, "-w", "-t", "60", "start"
        )
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        """Stop and remove a throwaway cluster; on an external server, drop the databases made
        (best effort: a leftover test database harms nothing)."""
        if self.folder is None or self.pg_ctl is None:
            self._drop_made()
            return
        cmd = [self.pg_ctl, "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as(self.run_as, cmd), capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _as(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def start_server() -> PgServer:
    """The server to test against.

    Raises:
        Unavailable: neither `VOICECALL_TEST_PG_URL` nor PostgreSQL's programs are here.
    """
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        return PgServer(admin_url=url)
    return start_cluster()


def start_cluster() -> PgServer:
    """A new throwaway cluster of our own (a test that restarts its server needs one).

    Raises:
        Unavailable: PostgreSQL's programs are not installed, or it cannot run here.
    """
    initdb, pg_ctl = _find("initdb"), _find("pg_ctl")
    if not initdb or not pg_ctl:
        raise Unavailable(
            f"no PostgreSQL server: set {URL_ENV}, or install PostgreSQL "
            "(`apt-get install postgresql`) so the tests can start a throwaway one"
        )
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable(
                "PostgreSQL refuses to run as root and there is no `postgres` "
                f"user to run it as; create one or set {URL_ENV}"
            ) from None
        run_as = "postgres"
    folder = Path(tempfile.mkdtemp(prefix="vc-pg-", dir="/tmp"))
    if run_as:
        shutil.chown(folder, run_as, run_as)
    data = folder / "data"
    init = subprocess.run(
        _as(
            run_as,
            [
                initdb,
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise Unavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    server = PgServer(admin_url="", folder=folder, run_as=run_as, pg_ctl=pg_ctl)
    for _ in range(5):  # the free port may be taken between the probe and the start
        port = _free_port()
        options = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        start = subprocess.run(
            _as(
                run_as,
                [
                    pg_ctl,
                    "-D",
                    str(data),
                    "-l",
                    str(folder / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if start.returncode == 0:
            server.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            server.options = options
            return server
        time.sleep(0.2)
    log = (
        (folder / "server.log").read_text(errors="replace")[-800:]
        if (folder / "server.log").exists()
        else start.stderr
    )
    shutil.rmtree(folder, ignore_errors=True)
    raise Unavailable(f"the throwaway PostgreSQL server did not start: {log}")


def server_for_test(start: Callable[[], PgServer]) -> PgServer:
    """`start()`'s server for a test; the test skips, saying why, where PostgreSQL is not
    available, except under CI, where `.ci/run` provides one and its absence is a failure."""
    import pytest  # here: the benchmarks use this module without pytest

    try:
        return start()
    except Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {exc}")
        pytest.skip(str(exc))
