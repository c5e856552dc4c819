"""Requests between daemons sharing a PostgreSQL store, over LISTEN/NOTIFY (SPEC section 16).

Each daemon listens on a channel named after its id. A request is `{"id", "replyTo", "kind",
"body"}` sent to the channel of the daemon that runs the call; the answer `{"id", "result"}` or
`{"id", "error": {"code", "message", "data"}}` comes back on the asker's channel. No daemon
needs to reach another over the network: both only reach the database. A message too long for
one NOTIFY goes through the store's mailbox table.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from daemon.errors import OperationTimeoutError, VoicecallError

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class MessageStore(Protocol):
    """What the bus needs of the store (:class:`daemon.store.postgres.PostgresStore`)."""

    daemon_id: str

    async def send(self, channel: str, message: str) -> None:
        """Deliver `message` to the listeners of `channel`."""

    async def listen(self, channel: str, on_message: Callable[[str], None]) -> None:
        """Call `on_message` with every message sent to `channel`."""


class RemoteError(VoicecallError):
    """An error the other daemon answered with (its code and message, passed on as they are)."""

    def __init__(self, code: int, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.rpc_code = code  # type: ignore[misc]  # the remote error's own code


def channel_of(daemon_id: str) -> str:
    """The channel a daemon listens on (an SQL identifier, whatever the id holds)."""
    return "voicecall_d_" + hashlib.sha256(daemon_id.encode()).hexdigest()[:24]


class ClusterBus:
    """Ask another daemon to do something, and do what others ask of this one."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store
        self.channel = channel_of(store.daemon_id)
        self._handlers: dict[str, Handler] = {}
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._running: set[asyncio.Task[None]] = set()

    def handle(self, kind: str, handler: Handler) -> None:
        """Run `handler(body)` for each request of `kind`; its result (or VoicecallError) is
        the answer."""
        self._handlers[kind] = handler

    async def start(self) -> None:
        """Listen on this daemon's channel."""
        await self.store.listen(self.channel, self._on_message)

    async def stop(self) -> None:
        """Fail what this daemon waits for and stop what it runs for others."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(OperationTimeoutError("the daemon is shutting down"))
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def request(
        self, daemon_id: str, kind: str, body: dict[str, Any], deadline: float
    ) -> Any:
        """Ask daemon `daemon_id` to run `kind` with `body`; its result, or its error raised
        as :class:`RemoteError`.

        Raises:
            OperationTimeoutError: no answer within `deadline` seconds.
        """
        request_id = secrets.token_hex(8)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self.store.send(
                channel_of(daemon_id),
                json.dumps(
                    {"id": request_id, "replyTo": self.channel, "kind": kind, "body": body},
                    separators=(",", ":"),
                ),
            )
            async with asyncio.timeout(deadline):
                return await future
        except TimeoutError:
            raise OperationTimeoutError(
                f"daemon {daemon_id}, which runs this call, did not answer within "
                f"{deadline:g}s; retry (if it died, another daemon takes its calls over "
                "within 30 s)",
                daemon=daemon_id,
            ) from None
        finally:
            self._waiting.pop(request_id, None)

    def _on_message(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if not isinstance(message, dict) or not isinstance(message.get("id"), str):
                raise ValueError("not a bus message")
        except ValueError:
            logger.warning("ignoring a malformed message on %s", self.channel)
            return
        if "kind" in message:
            task = asyncio.get_running_loop().create_task(
                self._serve(message), name=f"bus-{message['kind']}"
            )
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            return
        future = self._waiting.get(message["id"])
        if future is None or future.done():
            return  # the asker gave up already
        error = message.get("error")
        if isinstance(error, dict):
            future.set_exception(
                RemoteError(
                    int(error.get("code", -32603)),
                    str(error.get("message", "remote error")),
                    **(error.get("data") or {}),
                )
            )
        else:
            future.set_result(message.get("result"))

    async def _serve(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": message["id"]}
        handler = self._handlers.get(str(message["kind"]))
        try:
            if handler is None:
                raise VoicecallError(f"this daemon does not handle {message['kind']!r}")
            reply["result"] = await handler(message.get("body") or {})
        except VoicecallError as exc:
            reply["error"] = {"code": exc.rpc_code, "message": exc.message, "data": exc.details}
        except Exception as exc:
            logger.exception("a request from another daemon failed")
            reply["error"] = {"code": -32603, "message": f"internal error ({type(exc).__name__})"}
        reply_to = message.get("replyTo")
        if isinstance(reply_to, str) and reply_to.startswith("voicecall_d_"):
            try:
                await self.store.send(
                    reply_to, json.dumps(reply, separators=(",", ":"), default=str)
                )
            except VoicecallError as exc:
                logger.warning("could not answer another daemon: %s", exc.message)
