"""The `voicecall` command: parse -> RPC -> render.

This package imports no aiohttp, uvloop or provider SDK, so that `voicecall status` starts fast;
everything heavy lives in the daemon, reached over the Unix socket.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from daemon.rpc.trust import UntrustedSocketError
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
    "calls": "history_cmd",
    "mock": "mock_cmd",
    "smoke": "smoke_cmd",
    "daemon": "daemon_cmd",
    "config": "config_cmd",
    "secrets": "secrets_cmd",
    "service": "service_cmd",
    "doctor": "doctor_cmd",
    "completion": "completion_cmd",
    "mcp": "mcp_cmd",
}
"""Which module of `voicecall_cli.commands` defines each command (imported on first use).

The one list of top-level commands: :meth:`LazyGroup._load` adds, from the module named here,
the command of that name (`tests/unit/test_one_source.py` checks every entry resolves)."""


_SHOW: dict[str, bool] = {"traceback": False}
"""Whether `--traceback` was given (read by :func:`main` after the command failed)."""


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
            self._load(COMMAND_MODULES[cmd_name])
        return self.commands.get(cmd_name)

    def _load(self, module_name: str) -> None:
        """Import a command module and add the commands the index assigns to it, found by
        name among the module's top-level Click commands: the index is the only list."""
        module = importlib.import_module(f"voicecall_cli.commands.{module_name}")
        for value in vars(module).values():
            if (
                isinstance(value, click.Command)
                and value.name is not None
                and COMMAND_MODULES.get(value.name) == module_name
            ):
                self.add_command(value)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Suggest among every command, loaded or not (`stauts` -> `status`)."""
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            raise click.exceptions.NoSuchCommand(
                exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config",
    metavar="FILE",
    envvar="VOICECALL_CONFIG",
    help="Config file (default: $XDG_CONFIG_HOME/voicecall/config.toml).",
)
@click.option(
    "--socket",
    "socket",
    metavar="PATH",
    envvar="VOICECALL_SOCKET",
    help="Daemon socket (default: $XDG_RUNTIME_DIR/voicecall/daemon.sock).",
)
@click.option(
    "--no-autostart",
    is_flag=True,
    help="Do not start the daemon when none runs; exit with status 3 instead.",
)
@click.option(
    "--traceback",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda _ctx, _param, value: _SHOW.update(traceback=bool(value)),
    help="On an unexpected error, print the full Python traceback.",
)
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


def _interrupted(exc: BaseException) -> bool:
    """Whether an Abort came from Ctrl-C (Click turns a KeyboardInterrupt into one)."""
    return isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt | EOFError)


def main() -> None:
    """Entry point: run the CLI and map failures to exit statuses (SPEC section 4).

    Click's standalone mode would print `Aborted!` and exit 1 on Ctrl-C; here Ctrl-C exits
    130 (128 + SIGINT), as shells expect, after the command cancelled what it waited for.
    """
    try:
        code = cli.main(prog_name="voicecall", standalone_mode=False)
    except KeyboardInterrupt:
        _exit_interrupted()
    except click.exceptions.Abort as exc:
        if _interrupted(exc):
            _exit_interrupted()
        click.echo("Aborted.", err=True)
        sys.exit(ExitStatus.ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UntrustedSocketError as exc:  # from any command that reaches for the socket
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(ExitStatus.ERROR)
    except BrokenPipeError:  # `voicecall tail | head`: the reader left; not an error
        os._exit(0)  # skip the interpreter's final flush, which would fail again
    except Exception as exc:  # a bug or an unforeseen failure: one line, not a traceback
        _exit_unexpected(exc)
    sys.exit(code if isinstance(code, int) else 0)


def _exit_unexpected(exc: Exception) -> None:
    if _SHOW["traceback"]:
        traceback.print_exception(exc)
    else:
        click.echo(
            f"Error: unexpected {type(exc).__name__}: {exc} (run again with --traceback "
            "for the details, and report it if it persists)",
            err=True,
        )
    sys.exit(ExitStatus.ERROR)


def _exit_interrupted() -> None:
    click.echo("Interrupted.", err=True)
    sys.exit(ExitStatus.CTRL_C)
