"""Real faults for hostile tests: a small tmpfs filled to the last byte, a real second user."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


class SmallDisk:
    """A real tmpfs of a few MiB mounted for one test; `fill()` leaves it with no free byte."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        """Write until the file system answers ENOSPC, in shrinking chunks down to one byte."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
                chunk = b"\0" * size
                while True:
                    try:
                        os.write(fd, chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        assert os.statvfs(self.root).f_bavail == 0

    def free(self) -> None:
        """Give the space back."""
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    """A 4 MiB tmpfs (root only: skipped, saying why, where it cannot be mounted)."""
    root = Path(tempfile.mkdtemp(prefix="vc-disk-", dir="/tmp"))
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(
            f"cannot mount a small tmpfs to fill (needs root and mount rights): "
            f"{mount.stderr.strip() or mount.returncode}"
        )
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


OTHER_USER = "vc-hostile"
"""A real second local user for the tests that play another user of the machine."""

SYSTEM_PYTHON = "/usr/bin/python3"
"""A Python the other user can run (the test's own may live under /root)."""


@dataclass(frozen=True)
class OtherUser:
    """Another local account, and a way to run a stdlib Python script as it."""

    name: str
    uid: int
    gid: int

    def argv(self, *command: str) -> list[str]:
        """`command` run as this user (real uid, gid and groups), via setpriv."""
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--reset-env",
            *command,
        ]

    def python(self, script: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
        """Start `script` (stdlib only, isolated mode) as this user."""
        return subprocess.Popen(
            self.argv(SYSTEM_PYTHON, "-I", "-c", script, *args), text=True, **popen
        )


@pytest.fixture(scope="session")
def other_user() -> OtherUser:
    """A real second user, created with useradd when absent.

    It is kept afterwards (a system account with no home and no login shell): removing it
    would break another test session that uses it at the same time.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to create and act as a second local user")
    if not (
        shutil.which("useradd") and shutil.which("setpriv") and os.access(SYSTEM_PYTHON, os.X_OK)
    ):
        pytest.skip("needs useradd, setpriv and /usr/bin/python3 to play a second user")
    try:
        entry = pwd.getpwnam(OTHER_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(OTHER_USER)  # (another test run may have made it meanwhile)
        except KeyError:
            pytest.skip(f"cannot create a second user: {made.stderr.strip()}")
    return OtherUser(OTHER_USER, entry.pw_uid, entry.pw_gid)
