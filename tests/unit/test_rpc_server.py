"""The JSON-RPC server in-process, with its own dispatch tables."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from daemon.errors import CallNotFoundError, RpcCode
from daemon.rpc.server import AfterReply, Connection, RpcServer


async def _exchange(path: Path, payload: bytes, lines: int) -> list[Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    out = [json.loads(await reader.readline()) for _ in range(lines)]
    writer.close()
    return out


async def test_internal_errors_and_notifications() -> None:
    """A crashing handler gives -32603 without details; notifications get no reply."""
    calls: list[str] = []

    async def boom(params: dict[str, Any], conn: Connection) -> Any:
        raise RuntimeError("secret detail")

    async def record(params: dict[str, Any], conn: Connection) -> Any:
        calls.append(params["x"])
        return {"ok": True}

    async def missing(params: dict[str, Any], conn: Connection) -> Any:
        raise CallNotFoundError("c9")

    async def streaming(params: dict[str, Any], conn: Connection) -> Any:
        async def then() -> None:
            conn.notify("demo.event", {"n": 1})

        return AfterReply({"subscribed": True}, then)

    folder = Path(tempfile.mkdtemp(prefix="vc-"))
    server = RpcServer(
        folder / "s.sock", {"boom": boom, "record": record, "missing": missing, "stream": streaming}
    )
    await server.start()
    try:
        (crash,) = await _exchange(server.path, b'{"jsonrpc":"2.0","method":"boom","id":1}\n', 1)
        assert crash["error"]["code"] == RpcCode.INTERNAL_ERROR
        assert "secret detail" not in json.dumps(crash)
        (nf,) = await _exchange(server.path, b'{"jsonrpc":"2.0","method":"missing","id":2}\n', 1)
        assert nf["error"]["code"] == RpcCode.CALL_NOT_FOUND
        assert nf["error"]["data"] == {"type": "CallNotFoundError", "details": {"callId": "c9"}}
        # A notification, then a request: only the request is answered.
        replies = await _exchange(
            server.path,
            b'{"jsonrpc":"2.0","method":"record","params":{"x":"a"}}\n'
            b'{"jsonrpc":"2.0","method":"record","params":{"x":"b"},"id":3}\n',
            1,
        )
        assert replies == [{"jsonrpc": "2.0", "id": 3, "result": {"ok": True}}]
        assert sorted(calls) == ["a", "b"]
        first, second = await _exchange(
            server.path, b'{"jsonrpc":"2.0","method":"stream","id":4}\n', 2
        )
        assert first["result"] == {"subscribed": True}  # the reply comes before the stream
        assert second == {"jsonrpc": "2.0", "method": "demo.event", "params": {"n": 1}}
    finally:
        await server.stop()
    assert not server.path.exists()


async def test_half_closed_client_still_gets_its_answer() -> None:
    """A client that writes a request and shuts down its side still reads the reply."""

    async def slow(params: dict[str, Any], conn: Connection) -> Any:
        await asyncio.sleep(0.05)
        return 42

    folder = Path(tempfile.mkdtemp(prefix="vc-"))
    server = RpcServer(folder / "s.sock", {"slow": slow})
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b'{"jsonrpc":"2.0","method":"slow","id":1}')  # no newline, then EOF
        writer.write_eof()
        reply = json.loads(await reader.readline())
        assert reply["result"] == 42
        writer.close()
    finally:
        await server.stop()
