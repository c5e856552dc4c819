"""`mcp` is an optional extra (`voicecall[mcp]`): without it the CLI works and `voicecall mcp`
says how to install it (issue 14)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.harness import DaemonHarness

pytestmark = pytest.mark.e2e


def _without_mcp(d: DaemonHarness, tmp_path: Path) -> None:
    """Put an `mcp` first on the path that fails to import as a missing package does."""
    shadow = tmp_path / "shadow" / "mcp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mcp'\", name='mcp')\n"
    )
    d.env["PYTHONPATH"] = str(tmp_path / "shadow")


def test_mcp_without_the_sdk_names_the_extra_to_install(make_daemon, tmp_path: Path) -> None:
    d: DaemonHarness = make_daemon(None, start=False)
    _without_mcp(d, tmp_path)
    done = d.cli("--no-autostart", "mcp")
    assert done.returncode == 1
    assert "pip install 'voicecall[mcp]'" in done.stderr
    assert "Traceback" not in done.stderr
    # The SDK is never needed for the schema, nor for anything else.
    schema = d.cli("mcp", "--print-schema")
    assert schema.returncode == 0, schema.stderr
    assert '"voice_call"' in schema.stdout
    version = d.cli("--version")
    assert version.returncode == 0, version.stderr


def test_the_cli_path_never_imports_the_sdk() -> None:
    import subprocess

    code = (
        "import sys, voicecall_cli.main, voicecall_cli.commands.calls, "
        "voicecall_cli.commands.mcp_cmd; print('mcp' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "False"
