"""`voicecall service` through the real CLI, with unit files in a temporary XDG_CONFIG_HOME and
either no systemctl on PATH or a fake one that records its arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMCTL_LOG"
case "$2" in
  show-environment) [ -n "$FAKE_SYSTEMCTL_NO_MANAGER" ] && exit 1; echo HOME=/home/x ;;
  is-active) echo active ;;
esac
exit 0
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with no systemctl on PATH and config under tmp_path."""
    (tmp_path / "bin").mkdir()
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICECALL_", "XDG_", "FAKE_SYSTEMCTL"))
    }
    clean.update(
        PATH=str(tmp_path / "bin"),
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        VOICECALL_NO_AUTOSTART="1",
        PYTHONPATH=str(ROOT),
    )
    return clean


@pytest.fixture
def systemctl(env: dict[str, str], tmp_path: Path) -> Path:
    """Put a fake systemctl on PATH; returns the file it logs each invocation to."""
    exe = tmp_path / "bin" / "systemctl"
    exe.write_text(FAKE_SYSTEMCTL)
    exe.chmod(0o755)
    log = tmp_path / "systemctl.log"
    env["FAKE_SYSTEMCTL_LOG"] = str(log)
    return log


def voicecall(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicecall_cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def unit_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user"


def logged(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_install_without_systemctl_prints_commands(env: dict[str, str]) -> None:
    """The unit is written with the documented settings; the systemctl steps are printed."""
    done = voicecall(env, "service", "install")
    assert done.returncode == 0, done.stderr
    unit = (unit_dir(env) / "voicecall.service").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "WatchdogSec=30",
        "WantedBy=default.target",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in unit.splitlines()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.endswith(" daemon run")
    first = exec_start.removeprefix("ExecStart=").split()[0]
    assert Path(first).is_absolute()
    assert "LimitNOFILE=65536" in unit.splitlines()  # far above serve.max_connections
    assert not (unit_dir(env) / "voicecall.socket").exists()
    assert "systemctl --user daemon-reload" in done.stdout
    assert "systemctl --user enable --now voicecall.service" in done.stdout
    assert "not available" in done.stderr


def test_install_with_socket_activation_runs_systemctl(
    env: dict[str, str], systemctl: Path, tmp_path: Path
) -> None:
    """Global --config/--socket reach ExecStart and ListenStream; systemctl enables both units."""
    cfg, sock = tmp_path / "my config.toml", tmp_path / "run" / "d.sock"
    done = voicecall(
        env,
        "--config",
        str(cfg),
        "--socket",
        str(sock),
        "service",
        "install",
        "--socket-activation",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["systemctl"] is True and doc["todo"] == []
    unit = (unit_dir(env) / "voicecall.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.endswith(f' --config "{cfg}" --socket {sock} daemon run')
    assert "Requires=voicecall.socket" in unit
    socket_unit = (unit_dir(env) / "voicecall.socket").read_text().splitlines()
    assert f"ListenStream={sock}" in socket_unit
    assert "SocketMode=0600" in socket_unit
    assert logged(systemctl) == [
        "--user show-environment",
        "--user daemon-reload",
        "--user enable --now voicecall.socket voicecall.service",
    ]


def test_default_socket_unit_uses_runtime_dir(env: dict[str, str], systemctl: Path) -> None:
    """Without --socket the socket unit listens where the daemon looks by default."""
    done = voicecall(env, "service", "install", "--socket-activation", "--no-start")
    assert done.returncode == 0, done.stderr
    socket_unit = (unit_dir(env) / "voicecall.socket").read_text().splitlines()
    assert "ListenStream=%t/voicecall/daemon.sock" in socket_unit
    assert logged(systemctl) == ["--user show-environment", "--user daemon-reload"]
    assert "systemctl --user enable --now voicecall.socket voicecall.service" in done.stdout
    # Reinstalling without socket activation removes the stale socket unit.
    assert voicecall(env, "service", "install", "--no-start").returncode == 0
    assert not (unit_dir(env) / "voicecall.socket").exists()


def test_user_manager_not_answering(env: dict[str, str], systemctl: Path) -> None:
    """systemctl present but no user manager (SSH, container): only the probe runs."""
    env["FAKE_SYSTEMCTL_NO_MANAGER"] = "1"
    done = voicecall(env, "service", "install")
    assert done.returncode == 0, done.stderr
    assert logged(systemctl) == ["--user show-environment"]
    assert "systemctl --user enable --now voicecall.service" in done.stdout


def test_status_and_uninstall(env: dict[str, str], systemctl: Path) -> None:
    """status shows files and is-active; uninstall disables, removes and reloads."""
    assert voicecall(env, "service", "install", "--no-start").returncode == 0
    done = voicecall(env, "service", "status", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["service"]["installed"] is True and doc["service"]["active"] == "active"
    assert doc["socket"] == {
        "unit": "voicecall.socket",
        "path": str(unit_dir(env) / "voicecall.socket"),
        "installed": False,
        "active": None,
    }
    human = voicecall(env, "service", "status")
    assert "voicecall.service: installed, active" in human.stdout

    systemctl.unlink()
    removed = voicecall(env, "service", "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (unit_dir(env) / "voicecall.service").exists()
    assert logged(systemctl) == [
        "--user show-environment",
        "--user disable --now voicecall.service",
        "--user daemon-reload",
    ]
    nothing = voicecall(env, "service", "uninstall")
    assert "nothing to remove" in nothing.stdout


def test_status_without_systemctl(env: dict[str, str]) -> None:
    """Without systemctl, status still reports the files."""
    done = voicecall(env, "service", "status")
    assert done.returncode == 0
    assert "voicecall.service: not installed" in done.stdout


def test_unit_file_limit_follows_max_connections(env: dict[str, str], tmp_path: Path) -> None:
    """A large `serve.max_connections` raises LimitNOFILE above twice it."""
    cfg = tmp_path / "big.toml"
    cfg.write_text("[serve]\nmax_connections = 50000\n")
    done = voicecall(env, "--config", str(cfg), "service", "install")
    assert done.returncode == 0, done.stderr
    unit = (unit_dir(env) / "voicecall.service").read_text().splitlines()
    assert "LimitNOFILE=101024" in unit
