"""JSON-RPC 2.0 framing and shapes for the gateway socket (SPEC section 5).

One JSON value per line, UTF-8, newline-terminated, at most :data:`MAX_MESSAGE_BYTES`. Stdlib-only:
the CLI, the MCP server and the daemon all share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from daemon.errors import RpcCode, VoicecallError

MAX_MESSAGE_BYTES = 1024 * 1024
"""The largest message either side accepts, newline excluded."""

JSONRPC = "2.0"

METHODS = (
    "voicecall.initiate",
    "voicecall.continue",
    "voicecall.speak",
    "voicecall.end",
    "voicecall.status",
    "voicecall.dtmf",
    "voicecall.list",
    "voicecall.tail",
    "voicecall.expose",
    "voicecall.latency",
    "tool.voice_call",
    "daemon.status",
    "daemon.shutdown",
    "daemon.reload",
    "voicecall.cancel",
    "mock.inbound",
    "voicecall.tool_result",
)
"""Every method the daemon answers (SPEC section 5, plus `mock.inbound` of section 10).

Kept here, stdlib-only, for the CLI and MCP; `tests/unit/test_one_source.py` ties it to
:func:`daemon.rpc.methods.build_methods`."""

EVENT_NOTIFICATION = "voicecall.event"

ERROR_TYPES: dict[int, str] = {
    RpcCode.PARSE_ERROR: "ParseError",
    RpcCode.INVALID_REQUEST: "InvalidRequest",
    RpcCode.METHOD_NOT_FOUND: "MethodNotFound",
    RpcCode.INVALID_PARAMS: "InvalidParams",
    RpcCode.INTERNAL_ERROR: "InternalError",
}


@dataclass(frozen=True, slots=True)
class RpcErrorInfo:
    """An error as it travels on the wire."""

    code: int
    message: str
    type: str
    details: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        """Return the JSON-RPC `error` member."""
        data: dict[str, Any] = {"type": self.type}
        if self.details:
            data["details"] = self.details
        return {"code": self.code, "message": self.message, "data": data}

    @classmethod
    def from_exception(cls, exc: VoicecallError) -> RpcErrorInfo:
        """Describe one of our own errors."""
        return cls(exc.rpc_code, exc.message, type(exc).__name__, dict(exc.details) or None)

    @classmethod
    def standard(cls, code: int, message: str) -> RpcErrorInfo:
        """Describe one of the standard JSON-RPC errors."""
        return cls(code, message, ERROR_TYPES.get(code, "Error"))


class RpcRemoteError(Exception):
    """An error answer from the daemon, raised on the client side."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}

    @property
    def type(self) -> str:
        """The error class the daemon named."""
        return str(self.data.get("type", "Error"))


def encode(message: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    """Serialise one message as a line."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def request(method: str, params: dict[str, Any] | None, req_id: int | str | None) -> dict[str, Any]:
    """Build a request (or a notification when `req_id` is None)."""
    msg: dict[str, Any] = {"jsonrpc": JSONRPC, "method": method}
    if params is not None:
        msg["params"] = params
    if req_id is not None:
        msg["id"] = req_id
    return msg


def result(req_id: Any, value: Any) -> dict[str, Any]:
    """Build a success response."""
    return {"jsonrpc": JSONRPC, "id": req_id, "result": value}


def error(req_id: Any, info: RpcErrorInfo) -> dict[str, Any]:
    """Build an error response."""
    return {"jsonrpc": JSONRPC, "id": req_id, "error": info.to_wire()}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Build a server-to-client notification."""
    return {"jsonrpc": JSONRPC, "method": method, "params": params}
