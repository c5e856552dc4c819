"""The CLI's catch-all: an error no command foresaw is one `Error:` line and exit status 1;
`--traceback` prints the whole traceback instead (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.e2e


def _run_into_full_stdout(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`voicecall ARGS > /dev/full`: every write to stdout fails with ENOSPC."""
    env = {
        **os.environ,
        "VOICECALL_HOME": str(home),
        "VOICECALL_NO_KEYRING": "1",
        "VOICECALL_NO_AUTOSTART": "1",
    }
    env.pop("VOICECALL_CONFIG", None)
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-m", "voicecall_cli", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=False,
        )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_unforeseen_error_is_one_line(tmp_path: Path) -> None:
    done = _run_into_full_stdout(tmp_path, "secrets", "list")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: unexpected OSError: [Errno 28]")
    assert "--traceback" in lines[-1]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_traceback_flag_shows_the_whole_traceback(tmp_path: Path) -> None:
    done = _run_into_full_stdout(tmp_path, "--traceback", "secrets", "list")
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert "OSError: [Errno 28]" in done.stderr
