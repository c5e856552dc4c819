"""`voicecall mcp`: serve the `voice_call` agent tool over MCP (stdio), SPEC sections 4 and 7."""

from __future__ import annotations

import json

import click

from daemon.rpc.client import RpcClient
from daemon.tool_schema import TOOL_DESCRIPTION, TOOL_NAME, TOOL_SCHEMA
from voicecall_cli.context import CliContext, pass_ctx


@click.command("mcp", short_help="Serve the voice_call tool to an AI agent over MCP (stdio).")
@click.option(
    "--print-schema",
    is_flag=True,
    help="Print the tool's name, description and JSON Schema as JSON, then exit "
    "without starting anything.",
)
@pass_ctx
def mcp_cmd(ctx: CliContext, print_schema: bool) -> None:
    """Run a Model Context Protocol server on stdin/stdout for an agent host.

    It exposes one tool, voice_call (initiate_call, continue_call, speak_to_user, end_call,
    get_status), forwarded to the daemon's tool.voice_call method, and two read-only resources:
    voicecall://calls/active (the live calls) and voicecall://calls/{callId} (one call record).
    The daemon is started on the first request unless --no-autostart is given. A bad tool call
    returns {"error": "..."}; it never stops the server. See skills/voice-call/SKILL.md.

    \b
    Examples:
      $ voicecall mcp
      $ voicecall mcp --print-schema
      $ voicecall --no-autostart --socket /run/user/1000/voicecall/daemon.sock mcp

    \b
    An MCP host entry (Claude Desktop and similar):
      {"mcpServers": {"voicecall": {"command": "voicecall", "args": ["mcp"]}}}
    """
    if print_schema:
        # Straight from the stdlib-only schema module: no SDK import, no daemon.
        definition = {
            "name": TOOL_NAME,
            "description": TOOL_DESCRIPTION,
            "inputSchema": TOOL_SCHEMA,
        }
        click.echo(json.dumps(definition, indent=2, ensure_ascii=False))
        return
    try:
        # Imported here so that the rest of the CLI never pays for (or depends on) the SDK.
        from voicecall_cli.mcp_server import serve_stdio
    except ImportError as exc:
        raise click.ClickException(
            f"voicecall mcp needs the optional MCP SDK, which is not installed ({exc}); "
            "install it with: pip install 'voicecall[mcp]'"
        ) from None

    def connect(timeout: float | None) -> RpcClient:
        return ctx.connect(timeout=timeout)

    serve_stdio(connect)
