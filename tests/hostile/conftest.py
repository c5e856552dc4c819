"""Real faults for hostile tests: a small tmpfs that can be filled to the last byte."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(root)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root and mount rights): "
                    f"{mount.stderr.strip() or mount.returncode}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
