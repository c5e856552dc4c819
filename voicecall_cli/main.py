"""The `voicecall` command: parse -> RPC -> render.

This package imports no aiohttp, uvloop or provider SDK, so that `voicecall status` starts fast;
everything heavy lives in the daemon, reached over the Unix socket.
"""

from __future__ import annotations

import importlib
import sys

import click

from voicecall_cli.context import CliContext
from voicecall_cli.errors import ExitStatus

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

COMMAND_MODULES: dict[str, str] = {
    "call": "calls",
    "continue": "calls",
    "speak": "calls",
    "end": "calls",
    "status": "calls",
    "tail": "calls",
    "dtmf": "calls",
    "latency": "calls",
    "expose": "calls",
    "daemon": "daemon_cmd",
    "config": "config_cmd",
    "secrets": "secrets_cmd",
    "service": "service_cmd",
    "doctor": "doctor_cmd",
    "completion": "completion_cmd",
    "mcp": "mcp_cmd",
}
"""Which module of `voicecall_cli.commands` defines each command (imported on first use)."""


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command runs (or help lists it).

    `voicecall status` then loads the call commands alone, which keeps start-up fast.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, loaded or not."""
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import the command's module on first use."""
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            module = importlib.import_module(f"voicecall_cli.commands.{COMMAND_MODULES[cmd_name]}")
            module.register(self)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config", metavar="FILE", envvar="VOICECALL_CONFIG",
              help="Config file (default: $XDG_CONFIG_HOME/voicecall/config.toml).")
@click.option("--socket", "socket", metavar="PATH", envvar="VOICECALL_SOCKET",
              help="Daemon socket (default: $XDG_RUNTIME_DIR/voicecall/daemon.sock).")
@click.option("--no-autostart", is_flag=True,
              help="Do not start the daemon when none runs; exit with status 3 instead.")
@click.version_option(package_name="voicecall", prog_name="voicecall")
@click.pass_context
def cli(ctx: click.Context, config: str | None, socket: str | None, no_autostart: bool) -> None:
    """Place and answer phone calls from the command line or an AI agent.

    A background daemon owns the provider webhooks, media streams and call store; every command
    talks to it over a Unix socket and starts it when needed.

    \b
    Examples:
      $ voicecall call --to +15550001234 --message "Your order has shipped."
      $ voicecall call --to +15550001234 --message "Hi, got a minute?" --mode conversation
      $ voicecall continue --call-id CALL_ID --message "What time suits you?"
      $ voicecall tail
    """
    ctx.obj = CliContext.create(config, socket, no_autostart)



def main() -> None:
    """Entry point: run the CLI and map failures to exit statuses."""
    try:
        cli.main(prog_name="voicecall", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(ExitStatus.CTRL_C)
