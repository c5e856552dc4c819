"""One short function per RPC method (SPEC section 5), delegating to the daemon's parts."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Protocol

from daemon.agent_tool import run_tool
from daemon.errors import ConfigError, InvalidParamsError
from daemon.model.events import CallEvent
from daemon.rpc import protocol
from daemon.rpc.params import Params
from daemon.rpc.server import AfterReply, Connection, Handler

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.engine.calls import CallEngine
    from daemon.providers.base import Provider
    from daemon.realtime.service import RealtimeService
    from daemon.store.base import Store


class RpcHost(Protocol):
    """What the RPC methods use of the daemon (`daemon.app.Daemon` is one), and no more."""

    config: Config
    engine: CallEngine
    store: Store
    provider: Provider
    realtime: RealtimeService | None

    def status(self) -> dict[str, Any]:
        """The `daemon.status` result."""

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file and apply what can change live."""

    async def expose(self, mode: str, path: str | None) -> dict[str, Any]:
        """Switch the Tailscale exposure."""

    def request_stop(self) -> None:
        """Ask the daemon to stop."""

    def request_shutdown(self) -> None:
        """`daemon.shutdown`: stop the daemon (a worker: every worker)."""


DEFAULT_TAIL = 25


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "minMs": min(values),
        "maxMs": max(values),
        "avgMs": round(sum(values) / len(values), 1),
        "p50Ms": _percentile(values, 50),
        "p95Ms": _percentile(values, 95),
    }


def build_methods(daemon: RpcHost) -> dict[str, Handler]:
    """The dispatch table of the gateway socket (every name of :data:`protocol.METHODS`)."""
    return {
        **_call_methods(daemon),
        **_agent_methods(daemon),
        **_tail_method(daemon),
        **_daemon_methods(daemon),
    }


def _call_methods(daemon: RpcHost) -> dict[str, Handler]:
    """Placing, driving and inspecting calls."""
    engine = daemon.engine

    async def initiate(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        record = await engine.initiate(
            p.req("message"), p.text("to", required=False), p.text("mode", required=False)
        )
        return {
            "callId": record.call_id,
            "initiated": True,
            "to": record.to_number,
            "mode": record.mode.value,
        }

    async def continue_(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        transcript = await engine.continue_call(
            p.req("callId"), p.req("message"), p.integer("timeoutMs", minimum=1)
        )
        return {"success": True, "transcript": transcript}

    async def cancel(raw: dict[str, Any], conn: Connection) -> Any:
        cancelled = await engine.cancel_wait(Params(raw).req("callId"))
        return {"success": True, "cancelled": cancelled}

    async def speak(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        await engine.speak(p.req("callId"), p.req("message"))
        return {"success": True}

    async def end(raw: dict[str, Any], conn: Connection) -> Any:
        await engine.end(Params(raw).req("callId"))
        return {"success": True}

    async def status(raw: dict[str, Any], conn: Connection) -> Any:
        call_id = Params(raw).text("callId", required=False)
        if call_id is None:
            return {"calls": [c.to_wire() for c in engine.live_calls()]}
        record = await engine.get(call_id)
        return {"found": True, "call": record.to_wire()} if record else {"found": False}

    async def dtmf(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        await engine.send_dtmf(p.req("callId"), p.req("digits"))
        return {"success": True}

    async def list_(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        limit = p.integer("limit", minimum=1, maximum=10_000) or 50
        calls = await daemon.store.list_calls(
            live=p.flag("active") or None, limit=limit, since=p.timestamp("since")
        )
        return {"calls": [c.to_wire() for c in calls]}

    return {
        "voicecall.initiate": initiate,
        "voicecall.continue": continue_,
        "voicecall.cancel": cancel,
        "voicecall.speak": speak,
        "voicecall.end": end,
        "voicecall.status": status,
        "voicecall.dtmf": dtmf,
        "voicecall.list": list_,
    }


def _agent_methods(daemon: RpcHost) -> dict[str, Handler]:
    """The agent tool, its relayed results (realtime mode) and turn-latency figures."""
    engine = daemon.engine

    async def latency(raw: dict[str, Any], conn: Connection) -> Any:
        last = Params(raw).integer("last", minimum=1, maximum=100_000) or 200
        samples = await daemon.store.turn_latencies(last)
        return {
            "recordsScanned": len(samples),
            "turnLatency": _stats([a for a, _ in samples]),
            "listenWait": _stats([b for _, b in samples]),
        }

    async def tool(raw: dict[str, Any], conn: Connection) -> Any:
        return await run_tool(engine, raw)

    async def tool_result(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        if "output" not in raw:
            raise InvalidParamsError("output is required: the tool's result, any JSON value")
        realtime = daemon.realtime
        if realtime is None:
            raise ConfigError(
                "voicecall.tool_result needs realtime mode: set realtime.enabled "
                "= true and streaming.enabled = true"
            )
        await realtime.tool_result(p.req("callId"), p.req("toolCallId"), raw["output"])
        return {"success": True}

    return {
        "voicecall.latency": latency,
        "tool.voice_call": tool,
        "voicecall.tool_result": tool_result,
    }


def _tail_method(daemon: RpcHost) -> dict[str, Handler]:
    """`voicecall.tail`: the backlog, then live events, in order and without a gap."""
    engine = daemon.engine

    async def tail(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        call_id = p.text("callId", required=False)
        since = p.integer("since", minimum=0, maximum=100_000)
        backlog_size = DEFAULT_TAIL if since is None else since
        pending: list[CallEvent] = []
        live = False

        def on_event(event: CallEvent) -> None:
            if call_id is not None and event.call_id != call_id:
                return
            if live:
                conn.notify(protocol.EVENT_NOTIFICATION, {"event": event.to_wire()})
            else:
                pending.append(event)

        conn.on_close(engine.subscribe(on_event))
        backlog = await daemon.store.recent_events(call_id, backlog_size) if backlog_size else []

        async def send_backlog() -> None:
            nonlocal live
            last = backlog[-1].seq if backlog else 0
            for event in backlog + [e for e in pending if e.seq > last]:
                conn.notify(protocol.EVENT_NOTIFICATION, {"event": event.to_wire()})
            live = True

        return AfterReply({"subscribed": True, "backlog": len(backlog)}, send_backlog)

    return {"voicecall.tail": tail}


def _daemon_methods(daemon: RpcHost) -> dict[str, Handler]:
    """The daemon itself: status, reload, shutdown, exposure and the mock's inbound call."""
    engine = daemon.engine

    async def expose(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        mode = p.req("mode")
        if mode not in ("funnel", "serve", "off"):
            raise InvalidParamsError(f"mode = {mode!r}: expected funnel, serve or off")
        return await daemon.expose(mode, p.text("path", required=False))

    async def daemon_status(raw: dict[str, Any], conn: Connection) -> Any:
        return daemon.status()

    async def reload(raw: dict[str, Any], conn: Connection) -> Any:
        return await daemon.reload()

    async def shutdown(raw: dict[str, Any], conn: Connection) -> Any:
        asyncio.get_running_loop().call_later(0.05, daemon.request_shutdown)
        return {"ok": True}

    async def mock_inbound(raw: dict[str, Any], conn: Connection) -> Any:
        p = Params(raw)
        simulate = getattr(daemon.provider, "simulate_inbound", None)
        if simulate is None:
            raise ConfigError(
                f'mock.inbound needs provider = "mock" (this daemon runs {daemon.provider.name!r})'
            )
        from_number = p.text("from", required=False) or ""
        to_number = p.text("to", required=False) or (daemon.config.from_number or "+15550000000")
        provider_call_id = await simulate(from_number, to_number, p.texts("utterances"))
        record = await engine.get(provider_call_id)
        if record is None:
            raise ConfigError("the simulated inbound call was not recorded")
        return {"callId": record.call_id, "accepted": not record.is_ended}

    return {
        "voicecall.expose": expose,
        "daemon.status": daemon_status,
        "daemon.shutdown": shutdown,
        "daemon.reload": reload,
        "mock.inbound": mock_inbound,
    }
