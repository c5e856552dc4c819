"""`voicecall config set/unset` on a config file that is not valid TOML (SPEC section 4)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BROKEN = 'provider = "mock"\n[serve\nport = 3334\n'


def _run(home: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOICECALL_HOME": home, "VOICECALL_NO_KEYRING": "1"}
    for key in ("VOICECALL_CONFIG", "VOICECALL_SOCKET"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "voicecall_cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("args", [("set", "provider", "mock"), ("unset", "provider")])
def test_config_edit_of_an_invalid_toml_file_reports_an_error_not_a_traceback(args) -> None:
    """SPEC 4: diagnostics are `Error: <what failed, the value, what to do>`, exit 1.

    `config validate`/`show` report the TOML syntax error properly, but `config set` and
    `config unset` parse with tomlkit outside any handler and crash with a Python traceback
    (tomlkit.exceptions.UnexpectedCharError).
    """
    home = tempfile.mkdtemp(prefix="vc-")
    try:
        Path(home, "config.toml").write_text(BROKEN)
        done = _run(home, "config", *args)
        assert "Traceback" not in done.stderr, done.stderr[-400:]
        assert done.stderr.startswith("Error: "), done.stderr
        assert done.returncode == 1
        assert Path(home, "config.toml").read_text() == BROKEN
    finally:
        shutil.rmtree(home, ignore_errors=True)
