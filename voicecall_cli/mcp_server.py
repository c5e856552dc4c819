"""The MCP server behind `voicecall mcp`: the `voice_call` tool and read-only call resources.

It is a thin bridge. Every tool call is forwarded unchanged to the daemon's `tool.voice_call`
method and every resource read to `voicecall.status`, so an MCP client, the CLI and a gateway
talking to the socket all see the same behaviour and the same `{error}` sentences (SPEC
section 7). The daemon stays the only process that owns calls; this server holds no call state.

It is built on the official SDK's low-level `Server` rather than its decorator API
(`MCPServer`), on purpose: `MCPServer` derives a tool's input schema from a Python signature and
validates arguments with pydantic, whereas `voice_call` has a fixed, published schema
(`daemon/tool_schema.py`, also printed by `voicecall mcp --print-schema`) and argument mistakes
must come back as `{error}` results an agent can read and correct, not as SDK validation errors.

This module imports the `mcp` SDK at the top; only `voicecall mcp` imports it, lazily, so the
rest of the CLI starts without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.to_thread
import click
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from daemon.rpc.client import RpcClient
from daemon.rpc.protocol import RpcRemoteError
from daemon.tool_schema import TOOL_DESCRIPTION, TOOL_NAME, TOOL_SCHEMA

SERVER_NAME = "voicecall"

ACTIVE_CALLS_URI = "voicecall://calls/active"
"""Resource: the JSON list of live calls (`voicecall.status` without a callId)."""

CALL_URI_PREFIX = "voicecall://calls/"
CALL_URI_TEMPLATE = CALL_URI_PREFIX + "{callId}"
"""Resource template: one call record, live or ended (`voicecall.status {callId}`)."""

JSON_MIME = "application/json"

INSTRUCTIONS = (
    "voicecall places real phone calls. Use the voice_call tool: initiate_call (notify speaks "
    "and hangs up; conversation keeps the line open), get_status until the call is answered, "
    "then continue_call to speak and hear the reply, end_call to hang up. Results are JSON; a "
    "result with an `error` key is a mistake to read and correct, not a crash. Only call people "
    "who agreed to be called, and confirm the number with the user first. Live calls are "
    "readable at "
    f"{ACTIVE_CALLS_URI}, one call at {CALL_URI_TEMPLATE}."
)

Connect = Callable[[float | None], RpcClient]
"""Opens a connection to the daemon (starting it when allowed); the argument is the read timeout."""

RESOURCE_TIMEOUT_SECONDS = 30.0
"""How long a resource read may wait for the daemon; status answers are immediate."""


def _server_version() -> str:
    try:
        return version("voicecall")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


class DaemonBridge:
    """Blocking calls into the daemon, run in worker threads by the async handlers.

    One short-lived connection per request: the daemon may be restarted while an MCP client keeps
    this server running for hours, and a fresh connection (with autostart) recovers from that
    without any reconnect logic here.
    """

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def run_tool(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run one `voice_call` action; every failure becomes `{"error": sentence}`.

        No read timeout: the daemon bounds each action itself (ring timeout, and
        `transcript_timeout_ms` for continue_call) and answers with an `{error}` when it expires.
        """
        try:
            with self._connect(None) as client:
                result = client.call("tool.voice_call", arguments)
        except RpcRemoteError as exc:
            return {"error": exc.message}
        except click.ClickException as exc:  # the daemon is down and could not be started
            return {"error": exc.format_message()}
        except (OSError, ValueError) as exc:  # connection lost, or a garbled answer
            return {"error": f"lost the connection to the voicecall daemon: {exc}"}
        if not isinstance(result, dict):
            return {"error": f"the daemon answered {result!r}, not a JSON object"}
        return result

    def status(self, params: dict[str, Any]) -> Any:
        """Call `voicecall.status`; failures become MCP errors for the resource read."""
        try:
            with self._connect(RESOURCE_TIMEOUT_SECONDS) as client:
                return client.call("voicecall.status", params)
        except RpcRemoteError as exc:
            raise MCPError(types.INVALID_PARAMS, exc.message, exc.data or None) from None
        except click.ClickException as exc:
            raise MCPError(types.INTERNAL_ERROR, exc.format_message()) from None
        except (OSError, ValueError) as exc:
            raise MCPError(
                types.INTERNAL_ERROR, f"lost the connection to the voicecall daemon: {exc}"
            ) from None

    def read_resource(self, uri: str) -> str:
        """The JSON text of one resource.

        Raises:
            MCPError: INVALID_PARAMS for a URI that names no resource or no call (what the SDK's
                own `MCPServer` answers for an unknown resource), INTERNAL_ERROR when the
                daemon cannot be reached.
        """
        if uri == ACTIVE_CALLS_URI:
            calls = self.status({}).get("calls", [])
            return json.dumps(calls, ensure_ascii=False)
        call_id = unquote(uri[len(CALL_URI_PREFIX) :]) if uri.startswith(CALL_URI_PREFIX) else ""
        if not call_id or "/" in call_id:
            raise MCPError(
                types.INVALID_PARAMS,
                f"unknown resource {uri!r}; use {ACTIVE_CALLS_URI} or {CALL_URI_TEMPLATE}",
                {"uri": uri},
            )
        found = self.status({"callId": call_id})
        if not found.get("found"):
            raise MCPError(
                types.INVALID_PARAMS,
                f"no call with id {call_id!r}; list live calls at {ACTIVE_CALLS_URI}",
                {"uri": uri},
            )
        return json.dumps(found["call"], ensure_ascii=False)


def _tool_result(result: dict[str, Any]) -> types.CallToolResult:
    """Wrap a tool result: JSON text for every client, structured content for newer ones.

    An `{error}` result is flagged `isError` so the model sees a failed call it can fix; it is
    still an ordinary result, never a protocol error.
    """
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(result, ensure_ascii=False))],
        structured_content=result,
        is_error="error" in result,
    )


def build_server(bridge: DaemonBridge) -> Server[Any]:
    """The MCP server: one tool, one resource, one resource template."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tool = types.Tool(
            name=TOOL_NAME,
            title="Phone call",
            description=TOOL_DESCRIPTION,
            input_schema=TOOL_SCHEMA,
            annotations=types.ToolAnnotations(
                title="Phone call",
                read_only_hint=False,
                destructive_hint=False,
                idempotent_hint=False,
                open_world_hint=True,
            ),
        )
        return types.ListToolsResult(tools=[tool])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name != TOOL_NAME:
            raise MCPError(
                types.INVALID_PARAMS,
                f"unknown tool {params.name!r}; this server has only {TOOL_NAME!r}",
            )
        arguments = dict(params.arguments or {})
        # abandon_on_cancel: a cancelled request frees the client at once; the worker thread
        # finishes on its own when the daemon answers (the call itself is not cancelled).
        result = await anyio.to_thread.run_sync(bridge.run_tool, arguments, abandon_on_cancel=True)
        return _tool_result(result)

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        active = types.Resource(
            name="active-calls",
            title="Active calls",
            uri=ACTIVE_CALLS_URI,
            description="JSON list of the calls that are live now (call records).",
            mime_type=JSON_MIME,
        )
        return types.ListResourcesResult(resources=[active])

    async def list_resource_templates(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        template = types.ResourceTemplate(
            name="call",
            title="One call",
            uri_template=CALL_URI_TEMPLATE,
            description="The record of one call, live or ended: state, times and transcript.",
            mime_type=JSON_MIME,
        )
        return types.ListResourceTemplatesResult(resource_templates=[template])

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        text = await anyio.to_thread.run_sync(bridge.read_resource, uri, abandon_on_cancel=True)
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type=JSON_MIME, text=text)]
        )

    return Server(
        SERVER_NAME,
        version=_server_version(),
        title="voicecall",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
    )


def serve_stdio(connect: Connect) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    server = build_server(DaemonBridge(connect))

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)
