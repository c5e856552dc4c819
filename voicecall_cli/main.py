"""The `voicecall` command: parse -> RPC -> render.

This package imports no aiohttp, uvloop or provider SDK, so that `voicecall status` starts fast;
everything heavy lives in the daemon, reached over the Unix socket.
"""

from __future__ import annotations

import sys

import click

from voicecall_cli.commands import (
    calls,
    completion_cmd,
    config_cmd,
    daemon_cmd,
    doctor_cmd,
    mcp_cmd,
    secrets_cmd,
    service_cmd,
)
from voicecall_cli.context import CliContext
from voicecall_cli.errors import ExitStatus

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
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


for module in (calls, daemon_cmd, config_cmd, secrets_cmd, service_cmd, doctor_cmd,
               completion_cmd, mcp_cmd):
    module.register(cli)


def main() -> None:
    """Entry point: run the CLI and map failures to exit statuses."""
    try:
        cli.main(prog_name="voicecall", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(ExitStatus.CTRL_C)
