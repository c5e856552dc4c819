"""`voicecall mcp` as a real stdio subprocess, driven by the official MCP SDK's own client.

The server is spawned the way an agent host spawns it (`python -m voicecall_cli ... mcp`), and the
SDK's `stdio_client` + `ClientSession` speak to it, so the handshake, the tool listing, the tool
results and the resources are checked as a host would see them, against a real daemon running
the mock provider.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.shared.exceptions import MCPError

from daemon.rpc.client import DaemonUnreachableError
from daemon.rpc.protocol import RpcRemoteError
from daemon.tool_schema import TOOL_DESCRIPTION, TOOL_NAME, TOOL_SCHEMA
from tests.harness import FAST_MOCK, REPO, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e

CONVERSATION = FAST_MOCK + 'replies = ["Yes, Tuesday works."]\n'
LIVE_STATES = ("answered", "active", "speaking", "listening")

MakeDaemon = Callable[..., DaemonHarness]


@asynccontextmanager
async def mcp_session(d: DaemonHarness, *global_flags: str) -> AsyncIterator[ClientSession]:
    """Spawn `voicecall [flags] --socket SOCK mcp` and yield an initialised SDK client session."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "voicecall_cli", *global_flags, "--socket", str(d.socket), "mcp"],
        env={"VOICECALL_HOME": str(d.home), "VOICECALL_NO_KEYRING": "1"},
        cwd=REPO,
    )
    with open(d.home / "mcp-stderr.log", "w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def result_json(result: types.CallToolResult) -> dict[str, Any]:
    """The tool's JSON result, checked to be the same in text and structured form."""
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    data: dict[str, Any] = json.loads(block.text)
    assert result.structured_content == data
    assert result.is_error == ("error" in data)
    return data


async def call(session: ClientSession, **arguments: Any) -> dict[str, Any]:
    """Call voice_call and return its JSON result."""
    result = await session.call_tool(TOOL_NAME, arguments)
    assert isinstance(result, types.CallToolResult)
    return result_json(result)


async def poll(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Await `predicate()` until it returns something truthy (async twin of harness.wait_for)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


async def wait_live(session: ClientSession, call_id: str) -> dict[str, Any]:
    """Poll get_status until the call is connected."""

    async def live() -> dict[str, Any] | None:
        status = await call(session, action="get_status", callId=call_id)
        return status if status["call"]["state"] in LIVE_STATES else None

    found: dict[str, Any] = await poll(live, what=f"call {call_id} to connect")
    return found


async def test_lists_one_tool_with_the_published_schema(make_daemon: MakeDaemon) -> None:
    """tools/list has exactly voice_call, with TOOL_SCHEMA as its input schema."""
    d = make_daemon(FAST_MOCK)
    async with mcp_session(d) as session:
        listed = await session.list_tools()
    assert [t.name for t in listed.tools] == [TOOL_NAME]
    tool = listed.tools[0]
    assert tool.input_schema == TOOL_SCHEMA
    assert tool.description == TOOL_DESCRIPTION
    assert tool.annotations is not None and tool.annotations.open_world_hint is True


async def test_conversation_call_through_the_tool(make_daemon: MakeDaemon) -> None:
    """initiate_call, get_status, continue_call, speak_to_user and end_call, as an agent would."""
    d = make_daemon(CONVERSATION)
    async with mcp_session(d) as session:
        started = await call(
            session,
            action="initiate_call",
            to="+15550001234",
            message="Hi, it's the clinic.",
            mode="conversation",
        )
        assert set(started) == {"callId", "initiated"} and started["initiated"] is True
        call_id = started["callId"]

        status = await wait_live(session, call_id)
        assert status["found"] is True
        assert status["call"]["to"] == "+15550001234" and status["call"]["mode"] == "conversation"

        reply = await call(
            session, action="continue_call", callId=call_id, message="Does Tuesday work?"
        )
        assert reply == {"success": True, "transcript": "Yes, Tuesday works."}
        assert await call(
            session, action="speak_to_user", callId=call_id, message="Great, see you then."
        ) == {"success": True}
        assert await call(session, action="end_call", callId=call_id) == {"success": True}

        ended = await call(session, action="get_status", callId=call_id)
    assert ended["call"]["state"] == "hangup-bot"
    said = [(t["speaker"], t["text"]) for t in ended["call"]["transcript"]]
    assert said == [
        ("bot", "Hi, it's the clinic."),
        ("bot", "Does Tuesday work?"),
        ("user", "Yes, Tuesday works."),
        ("bot", "Great, see you then."),
    ]


async def test_bad_calls_return_error_results_and_the_server_keeps_serving(
    make_daemon: MakeDaemon,
) -> None:
    """Mistakes come back as {error} tool results flagged isError; the session stays usable."""
    d = make_daemon(FAST_MOCK)
    async with mcp_session(d) as session:
        assert await call(session, action="continue_call", message="Hello?") == {
            "error": "callId required"
        }
        assert await call(session, action="initiate_call") == {"error": "message required"}
        unknown = await call(session, action="end_call", callId="no-such-call")
        assert set(unknown) == {"error"} and "no-such-call" in unknown["error"]
        # Outside the schema's enum: the server does not crash, the daemon explains.
        bogus = await call(session, action="dance")
        assert set(bogus) == {"error"} and "initiate_call" in bogus["error"]
        assert await call(session, action="get_status", callId="no-such-call") == {"found": False}
        # An unknown tool name is a protocol error, not a tool result.
        with pytest.raises(MCPError, match="unknown tool"):
            await session.call_tool("hang_glider", {})
        assert [t.name for t in (await session.list_tools()).tools] == [TOOL_NAME]


async def test_call_resources(make_daemon: MakeDaemon) -> None:
    """voicecall://calls/active lists live calls; voicecall://calls/{id} is one record."""
    d = make_daemon(CONVERSATION)
    async with mcp_session(d) as session:
        resources = await session.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["voicecall://calls/active"]
        templates = await session.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == [
            "voicecall://calls/{callId}"
        ]

        async def read(uri: str) -> Any:
            result = await session.read_resource(uri)
            assert isinstance(result, types.ReadResourceResult)
            (content,) = result.contents
            assert isinstance(content, types.TextResourceContents)
            assert content.mime_type == "application/json"
            return json.loads(content.text)

        assert await read("voicecall://calls/active") == []
        call_id = (
            await call(
                session,
                action="initiate_call",
                to="+15550001234",
                message="Hello",
                mode="conversation",
            )
        )["callId"]
        await wait_live(session, call_id)
        active = await read("voicecall://calls/active")
        assert [c["callId"] for c in active] == [call_id]
        record = await read(f"voicecall://calls/{call_id}")
        assert record["callId"] == call_id and record["direction"] == "outbound"

        await call(session, action="end_call", callId=call_id)
        assert await read("voicecall://calls/active") == []
        assert (await read(f"voicecall://calls/{call_id}"))["state"] == "hangup-bot"
        with pytest.raises(MCPError, match="no call with id"):
            await read("voicecall://calls/no-such-call")
        with pytest.raises(MCPError, match="unknown resource"):
            await read("voicecall://elsewhere")


async def test_autostarts_the_daemon_on_the_first_tool_call(make_daemon: MakeDaemon) -> None:
    """With no daemon running, the first request starts one on the configured socket."""
    d = make_daemon(FAST_MOCK, start=False)
    assert not d.socket.exists()
    pid: int | None = None
    try:
        async with mcp_session(d) as session:
            assert await call(session, action="get_status", callId="x") == {"found": False}
        pid = int(d.rpc("daemon.status")["pid"])
    finally:
        _stop_autostarted(d, pid)


async def test_no_autostart_reports_an_unreachable_daemon_as_an_error_result(
    make_daemon: MakeDaemon,
) -> None:
    """--no-autostart with no daemon: the tool answers {error}, and nothing is started."""
    d = make_daemon(FAST_MOCK, start=False)
    async with mcp_session(d, "--no-autostart") as session:
        result = await call(session, action="get_status", callId="x")
        with pytest.raises(MCPError, match="daemon not running"):
            await session.read_resource("voicecall://calls/active")
    assert set(result) == {"error"} and "daemon not running" in result["error"]
    assert not d.socket.exists()


def test_print_schema_prints_the_tool_and_starts_nothing(make_daemon: MakeDaemon) -> None:
    """`mcp --print-schema` prints name, description and inputSchema, with no daemon."""
    d = make_daemon(FAST_MOCK, start=False)
    done = d.cli("mcp", "--print-schema")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "inputSchema": TOOL_SCHEMA,
    }
    assert done.stderr == ""
    assert not d.socket.exists()


def test_the_cli_does_not_import_the_sdk_at_startup() -> None:
    """Only `voicecall mcp` loads the mcp SDK; every other command starts without it."""
    code = "import sys, voicecall_cli.main; assert 'mcp' not in sys.modules, 'mcp imported'"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr


def _stop_autostarted(d: DaemonHarness, pid: int | None) -> None:
    """Stop a daemon the harness did not start: shutdown RPC, then SIGKILL by its pid."""
    try:
        d.rpc("daemon.shutdown", timeout=5.0)
    except (DaemonUnreachableError, RpcRemoteError, OSError):
        pass
    try:
        wait_for(lambda: not d.socket.exists(), timeout=10, message="the daemon to stop")
    except AssertionError:
        if pid is not None:
            os.kill(pid, 9)
        raise
