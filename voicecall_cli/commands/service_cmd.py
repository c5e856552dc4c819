"""`voicecall service`: run the daemon as a systemd user service (`Type=notify`).

Writing the unit files is all this needs to do; systemctl is run only when it exists and a user
manager answers (not in containers, CI or an SSH session without lingering), and otherwise the
commands are printed for the user to run where they work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from voicecall_cli.context import CliContext, pass_ctx
from voicecall_cli.errors import CliError
from voicecall_cli.output import emit_json

SERVICE_NAME = "voicecall.service"
SOCKET_NAME = "voicecall.socket"
SYSTEMCTL_TIMEOUT_SECONDS = 30.0
DEFAULT_SOCKET_UNIT_PATH = "%t/voicecall/daemon.sock"
"""Where the socket unit listens by default: %t is $XDG_RUNTIME_DIR, the daemon's default too."""


def unit_dir(env: Mapping[str, str] | None = None) -> Path:
    """The systemd user unit folder: `$XDG_CONFIG_HOME/systemd/user` (~/.config by default)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "systemd" / "user"


def voicecall_argv() -> list[str]:
    """The absolute command that runs this installation of `voicecall`.

    The console script next to this interpreter when there is one, else `python -m
    voicecall_cli`. Never a PATH lookup: systemd's PATH differs, and shims (pyenv, asdf) pick
    their interpreter from the shell's state.
    """
    script = Path(sys.executable).parent / "voicecall"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "voicecall_cli"]


def _quote(arg: str) -> str:
    """Quote one word for a systemd command line (systemd.syntax(7), systemd.unit(5) `%`)."""
    arg = arg.replace("%", "%%").replace("$", "$$")  # systemd expands both in ExecStart
    if arg and not any(c in arg for c in " \t\"'\\;$"):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


NOFILE_FLOOR = 65536
"""`LimitNOFILE=` of the unit at least: far above the default `serve.max_connections` (1024)."""
NOFILE_HEADROOM = 1024
"""Descriptors beyond the connection cap: store, RPC clients, vendor sockets, logs."""


def nofile_limit(config_path: Path) -> int:
    """`LimitNOFILE=` for the unit: above twice `serve.max_connections` plus headroom.

    Read from the config file with tomllib (the CLI stays light); an unreadable file or key
    means the default cap, which the floor covers. The daemon checks its own limit at start too.
    """
    try:
        with config_path.open("rb") as handle:
            serve = tomllib.load(handle).get("serve", {})
        cap = int(serve.get("max_connections", 1024))
    except (OSError, ValueError, TypeError, AttributeError, tomllib.TOMLDecodeError):
        cap = 1024
    return max(NOFILE_FLOOR, 2 * cap + NOFILE_HEADROOM)


def service_unit(
    exec_argv: list[str],
    *,
    config: str | None,
    socket: str | None,
    socket_activation: bool,
    env: Mapping[str, str],
    nofile: int = NOFILE_FLOOR,
) -> str:
    """The text of voicecall.service; `nofile` is its `LimitNOFILE=`."""
    argv = list(exec_argv)
    if config:
        argv += ["--config", str(Path(config).expanduser().absolute())]
    if socket:
        argv += ["--socket", str(Path(socket).expanduser().absolute())]
    argv += ["daemon", "run"]
    lines = [
        "# Written by `voicecall service install`; rerun it to update, or edit and",
        "# `systemctl --user daemon-reload`.",
        "[Unit]",
        "Description=voicecall daemon: phone calls for people and AI agents",
        "Documentation=man:voicecall(1)",
    ]
    if socket_activation:
        lines.append(f"Requires={SOCKET_NAME}")
        lines.append(f"After={SOCKET_NAME}")
    lines += [
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(_quote(a) for a in argv),
        "ExecReload=/bin/kill -HUP $MAINPID",  # `systemctl --user reload`: daemon reload
        "Restart=on-failure",
        "RestartSec=2",
        "WatchdogSec=30",
        "TimeoutStopSec=20",
        f"LimitNOFILE={nofile}",  # above serve.max_connections: see nofile_limit
        "Environment=PYTHONUNBUFFERED=1",
    ]
    for var in ("VOICECALL_HOME", "XDG_STATE_HOME"):
        if env.get(var):
            lines.append("Environment=" + _quote(f"{var}={env[var]}"))
    lines += ["", "[Install]", "WantedBy=default.target"]
    if socket_activation:
        lines.append(f"Also={SOCKET_NAME}")
    return "\n".join(lines) + "\n"


def socket_unit(socket: str | None) -> str:
    """The text of voicecall.socket: the daemon's RPC socket, owned by systemd."""
    listen = str(Path(socket).expanduser().absolute()) if socket else DEFAULT_SOCKET_UNIT_PATH
    return (
        "\n".join(
            [
                "# Written by `voicecall service install --socket-activation`.",
                "[Unit]",
                "Description=voicecall daemon socket",
                "",
                "[Socket]",
                "ListenStream=" + (listen.replace("%", "%%") if socket else listen),
                "SocketMode=0600",
                "DirectoryMode=0700",
                "",
                "[Install]",
                "WantedBy=sockets.target",
            ]
        )
        + "\n"
    )


def _systemctl() -> str | None:
    """systemctl's path when it exists and a user manager answers, else None."""
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    try:
        probe = subprocess.run(
            [exe, "--user", "show-environment"], capture_output=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return exe if probe.returncode == 0 else None


def _run(exe: str, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            [exe, "--user", *args],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CliError(
            f"`systemctl --user {' '.join(args)}` did not finish in {SYSTEMCTL_TIMEOUT_SECONDS:g}s"
        ) from None
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"status {done.returncode}"
        raise CliError(
            f"`systemctl --user {' '.join(args)}` failed: {detail}; "
            f"see `journalctl --user -u {SERVICE_NAME}`"
        )
    return done


def _units(socket_activation: bool) -> list[str]:
    return [SOCKET_NAME, SERVICE_NAME] if socket_activation else [SERVICE_NAME]


JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.group("service", short_help="Run the daemon as a systemd user service.")
def service_group() -> None:
    """Install, remove and inspect the systemd user unit that runs `voicecall daemon run`.

    The unit is `Type=notify` with a 30 s watchdog, restarts on failure, and can take its RPC
    socket from a socket unit (--socket-activation). To keep it running without a login
    session: `loginctl enable-linger $USER`.

    \b
    Examples:
      $ voicecall service install
      $ voicecall service install --socket-activation
      $ voicecall service status
      $ voicecall service uninstall
    """


@service_group.command("install", short_help="Write and enable the systemd user unit.")
@click.option(
    "--socket-activation",
    is_flag=True,
    help="Also write voicecall.socket, so systemd owns the RPC socket and starts the "
    "daemon on first use.",
)
@click.option(
    "--no-start",
    is_flag=True,
    help="Only write the unit files and reload systemd; do not enable or start.",
)
@JSON
@pass_ctx
def install(obj: CliContext, socket_activation: bool, no_start: bool, as_json: bool) -> None:
    """Write ~/.config/systemd/user/voicecall.service (and voicecall.socket) and start it.

    The global --config and --socket options, and VOICECALL_HOME, are carried into the unit.
    When systemctl or a user manager is not available, the commands to run are printed
    instead.

    \b
    Examples:
      $ voicecall service install
      $ voicecall --config ~/voicecall/prod.toml service install --no-start
      $ voicecall service install --socket-activation
    """
    written = _write_units(obj, socket_activation)
    commands = [["daemon-reload"]]
    if not no_start:
        commands.append(["enable", "--now", *_units(socket_activation)])
    exe = _systemctl()
    ran: list[str] = []
    if exe is not None:
        for args in commands:
            _run(exe, args)
            ran.append("systemctl --user " + " ".join(args))
    todo = [] if exe else ["systemctl --user " + " ".join(args) for args in commands]
    if no_start:
        todo.append("systemctl --user enable --now " + " ".join(_units(socket_activation)))
    if as_json:
        emit_json(
            {
                "unitFiles": [str(p) for p in written],
                "systemctl": exe is not None,
                "ran": ran,
                "todo": todo,
            }
        )
        return
    for path in written:
        click.echo(f"Wrote {path}")
    for line in ran:
        click.echo(f"Ran: {line}")
    if exe is None:
        click.echo(
            "systemctl --user is not available here (no systemd user manager); "
            "run these where it is:",
            err=True,
        )
    elif todo:
        click.echo("To start it:")
    for line in todo:
        click.echo(f"  {line}")
    click.echo("To keep it running after logout: loginctl enable-linger $USER")


def _write_units(obj: CliContext, socket_activation: bool) -> list[Path]:
    """Write the service unit (and the socket unit, or remove a stale one); the files written."""
    folder = unit_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # The daemon and the socket unit must agree on the socket: pass it explicitly whenever it
    # is not the default under $XDG_RUNTIME_DIR (%t), which both find on their own.
    socket = obj.socket_flag or (
        str(obj.paths.socket) if os.environ.get("VOICECALL_HOME") else None
    )
    service_path = folder / SERVICE_NAME
    service_path.write_text(
        service_unit(
            voicecall_argv(),
            config=obj.config_flag,
            socket=socket,
            socket_activation=socket_activation,
            env=os.environ,
            nofile=nofile_limit(obj.paths.config),
        )
    )
    written = [service_path]
    socket_path = folder / SOCKET_NAME
    if socket_activation:
        socket_path.write_text(socket_unit(socket))
        written.append(socket_path)
    elif socket_path.exists():
        socket_path.unlink()  # left by an earlier --socket-activation install
    return written


@service_group.command("uninstall", short_help="Stop, disable and remove the unit files.")
@JSON
def uninstall(as_json: bool) -> None:
    """Stop and disable the service, then remove its unit files.

    \b
    Examples:
      $ voicecall service uninstall
    """
    folder = unit_dir()
    present = [folder / name for name in (SERVICE_NAME, SOCKET_NAME) if (folder / name).exists()]
    exe = _systemctl()
    ran: list[str] = []
    todo: list[str] = []
    names = [p.name for p in present]
    if present:
        disable = ["disable", "--now", *names]
        if exe is not None:
            _run(exe, disable, check=False)  # already stopped or never enabled is fine
            ran.append("systemctl --user " + " ".join(disable))
        else:
            todo.append("systemctl --user " + " ".join(disable))
    for path in present:
        path.unlink()
    if present:
        if exe is not None:
            _run(exe, ["daemon-reload"])
            ran.append("systemctl --user daemon-reload")
        else:
            todo.append("systemctl --user daemon-reload")
    if as_json:
        emit_json(
            {
                "removed": [str(p) for p in present],
                "systemctl": exe is not None,
                "ran": ran,
                "todo": todo,
            }
        )
        return
    if not present:
        click.echo(f"No voicecall unit files in {folder}; nothing to remove.")
    for path in present:
        click.echo(f"Removed {path}")
    for line in ran:
        click.echo(f"Ran: {line}")
    if todo:
        click.echo("systemctl --user is not available here; run these where it is:", err=True)
        for line in todo:
            click.echo(f"  {line}")


@service_group.command("status", short_help="Show whether the unit is installed and active.")
@JSON
def status(as_json: bool) -> None:
    """Show whether the unit files exist and what `systemctl --user is-active` says.

    \b
    Examples:
      $ voicecall service status
      $ voicecall service status --json
    """
    folder = unit_dir()
    exe = _systemctl()
    units: dict[str, dict[str, Any]] = {}
    for key, name in (("service", SERVICE_NAME), ("socket", SOCKET_NAME)):
        path = folder / name
        active: str | None = None
        if exe is not None and path.exists():
            active = _run(exe, ["is-active", name], check=False).stdout.strip() or "unknown"
        units[key] = {"unit": name, "path": str(path), "installed": path.exists(), "active": active}
    if as_json:
        emit_json({"unitDir": str(folder), "systemctl": exe is not None, **units})
        return
    for info in units.values():
        state = "installed" if info["installed"] else "not installed"
        active_text = f", {info['active']}" if info["active"] else ""
        click.echo(f"{info['unit']}: {state}{active_text} ({info['path']})")
    if exe is None:
        click.echo("systemctl --user is not available here; activity unknown.", err=True)
