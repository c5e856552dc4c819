"""The daemon raises its soft open-file limit above serve.max_connections (SPEC 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import resource
_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
from daemon.webhooks.connections import ensure_fd_limit
print(ensure_fd_limit(1024), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_soft_limit_is_raised_toward_the_hard_limit() -> None:
    """With a soft limit of 256 and the default cap of 1024, the limit becomes 2048."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    returned, soft, hard = (int(v) for v in done.stdout.split())
    expected = 2048 if hard < 0 or hard >= 2048 else hard
    assert returned == soft == expected
