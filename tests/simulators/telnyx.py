"""A local Telnyx: Call Control v2 REST plus Ed25519-signed webhooks, on 127.0.0.1:0.

It speaks Telnyx's wire format (`/v2/calls`, `/v2/calls/{id}/actions/{action}`,
`GET /v2/calls/{id}`; webhooks `{"data":{"id","event_type","payload"},"meta"}` signed with
`telnyx-signature-ed25519` over `f"{timestamp}|{body}"`) and plays the carrier: it answers, speaks
(`call.speak.started`/`ended`), transcribes the caller (`call.transcription` from `replies`), and
hangs up with a chosen cause. Tests script it: `inbound()`, `caller_says()`, `caller_hangup()`,
`press()` (DTMF), `resend()` (a Telnyx retry: same event id, fresh signature), `replay()`
(byte-identical), and `hold`/`release()` for out-of-order delivery. Every REST request is
recorded, and a command carrying a field the Call Control schema does not define for it (the
telnyx SDK's parameter types, `tests.simulators.telnyx_schema`) is refused with 422.

Webhook shapes follow `../shared/vendor_samples/` (real captures): `direction` only on
`call.initiated`; `call.hangup` carries `hangup_cause` (only the schema's values),
`hangup_source` (`caller`/`callee`/`unknown`) and `sip_hangup_cause`; `client_state` is null
until a command sets one.

Media streaming: a dial or answer carrying `stream_url` makes it open that websocket once the
call is answered, like Telnyx: `connected`, `start` (`stream_id`, `start.call_control_id`,
`start.client_state`, `start.media_format` PCMU 8 kHz), caller audio as `media` messages
(`send_audio()`), keys as `dtmf` frames (`press(..., via="stream")`), `stop` when the call
ends. It records the daemon's `media` audio, echoes each `mark` back (played), and counts
`clear`s. Failure paths: `stream_outcome = "failed"` sends `streaming.failed` instead of
connecting; `stream_error()` sends an `error` frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from nacl.signing import SigningKey

from tests.fakes._server import FakeServer
from tests.simulators.amd import Callee, Heard, fixture
from tests.simulators.telnyx_schema import check_command

API_KEY = "KEYtest-telnyx-0001"
CONNECTION_ID = "1494404757140276705"
SIP_CAUSES = {
    "normal_clearing": "200",
    "originator_cancel": "487",
    "timeout": "487",
    "no_answer": "480",
    "time_limit": "unspecified",
    "user_busy": "486",
    "call_rejected": "603",
    "not_found": "404",
    "unspecified": "unspecified",
}
"""`sip_hangup_cause` Telnyx puts beside each `hangup_cause` (as in the vendor samples)."""
CAPTURED_EVENTS = frozenset(
    {"call.initiated", "call.answered", "call.speak.started", "call.speak.ended", "call.hangup"}
)
"""Event types seen in real captures, which carry `calling_party_type`."""


@dataclass
class SimStream:
    """One media stream as the simulated Telnyx runs it."""

    url: str
    fields: dict[str, Any]
    """The `stream_*` fields of the dial/answer command."""
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ws: aiohttp.ClientWebSocketResponse | None = None
    events: list[tuple[str, Any]] = field(default_factory=list)
    """What the daemon sent, in order: ("audio", bytes), ("mark", name), ("clear", None)."""
    open: bool = False
    close_code: int | None = None
    sequence: int = 0
    task: asyncio.Task[None] | None = None

    def audio(self) -> list[bytes]:
        """Every outbound `media` payload, decoded."""
        return [value for kind, value in self.events if kind == "audio"]

    def marks(self) -> list[str]:
        """Every `mark` name."""
        return [value for kind, value in self.events if kind == "mark"]

    @property
    def cleared(self) -> int:
        """How many `clear`s arrived."""
        return sum(1 for kind, _ in self.events if kind == "clear")


@dataclass
class SimCall:
    """One call leg as the simulated Telnyx sees it."""

    call_control_id: str
    direction: str  # "incoming" | "outgoing"
    from_: str
    to: str
    webhook_url: str
    client_state: str | None = None
    answered: bool = False
    ended: bool = False
    transcribing: bool = False
    spoken: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    commands: set[str] = field(default_factory=set)
    stream_request: dict[str, Any] | None = None
    """The `stream_*` fields of the dial/answer, opened once the call is answered."""
    streams: list[SimStream] = field(default_factory=list)
    leg_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    )
    amd: str = "disabled"
    """The dial's `answering_machine_detection`."""
    heard: Heard = field(default_factory=Heard)


@dataclass
class Recorded:
    """One REST request."""

    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Delivery:
    """One webhook POST and our daemon's answer."""

    event_type: str
    event_id: str
    body: bytes
    headers: dict[str, str]
    url: str
    status: int = 0
    reply: bytes = b""


class TelnyxSimulator(FakeServer):
    """`api_base_url` is `origin + "/v2"`; `public_key` goes into `telnyx.public_key`."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.signing_key = SigningKey.generate()
        self.public_key = base64.b64encode(bytes(self.signing_key.verify_key)).decode()
        self.requests: list[Recorded] = []
        self.calls: dict[str, SimCall] = {}
        self.deliveries: list[Delivery] = []
        self.answer_delay = 0.05
        self.callee = Callee()
        """Who picks up outbound calls: a person, a voicemail box or a fax (for AMD)."""
        self.outcome: str | None = None
        """None answers outbound calls; a hangup cause (`user_busy`) ends them unanswered."""
        self.replies: list[str] = []
        """What the caller says, one per listening turn, after our prompt ends."""
        self.speak_seconds = 0.05
        self.status_error: int | None = None
        """When set, `GET /calls/{id}` answers this HTTP status."""
        self.outcome_source = "callee"
        """The `hangup_source` of an `outcome` hang-up (`unknown` for timeout, not_found)."""
        self.stream_outcome: str | None = None
        """"failed": a stream is never connected; `streaming.failed` is sent instead."""
        self.sent_frames: dict[str, dict[str, Any]] = {}
        """The first stream message of each event this simulator sent (shape checks)."""
        self.fail_next: list[int] = []
        """HTTP statuses the next REST requests get instead of being served (one each)."""
        self.schema_errors: list[str] = []
        """Fields of refused commands that the Call Control schema does not define."""
        self.hold = False
        """When True, webhooks are queued in `held` instead of sent (see `release`)."""
        self.held: list[tuple[SimCall, str, dict[str, Any]]] = []
        self.clock_offset = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        super().__init__()

    @property
    def api_base_url(self) -> str:
        """What `telnyx.api_base_url` must be."""
        return f"{self.origin}/v2"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/calls", self._dial)
        app.router.add_post("/v2/calls/{id}/actions/{action}", self._action)
        app.router.add_get("/v2/calls/{id}", self._status)

    async def start(self) -> None:
        """Listen, and open the client that delivers webhooks."""
        await super().start()
        self._session = aiohttp.ClientSession()

    async def _before_close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ REST

    @staticmethod
    def _error(status: int, code: str, title: str) -> web.Response:
        return web.json_response(
            {"errors": [{"code": code, "title": title, "detail": title}]}, status=status
        )

    async def _authorised(self, request: web.Request) -> dict[str, Any] | web.Response:
        body: dict[str, Any] = {}
        if request.can_read_body:
            body = await request.json()
        self.requests.append(Recorded(request.method, request.path, body, dict(request.headers)))
        await self.notify()
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "10009", "Authentication failed")
        if self.fail_next:
            return self._error(self.fail_next.pop(0), "10007", "Unexpected error")
        return body

    def commands(self, action: str) -> list[Recorded]:
        """The recorded REST requests of one action (`speak`, `hangup`, ...) or `dial`."""
        if action == "dial":
            return [r for r in self.requests if r.path == "/v2/calls"]
        return [r for r in self.requests if r.path.endswith(f"/actions/{action}")]

    async def _dial(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        for key in ("connection_id", "to", "from", "webhook_url"):
            if not body.get(key):
                return self._error(422, "10032", f"{key} is required")
        refused = self._schema("dial", body)
        if refused is not None:
            return refused
        call = SimCall(
            f"v3:{uuid.uuid4().hex}",
            "outgoing",
            body["from"],
            body["to"],
            body["webhook_url"],
            client_state=body.get("client_state"),
        )
        call.stream_request = _stream_fields(body)
        call.amd = str(body.get("answering_machine_detection") or "disabled")
        self.calls[call.call_control_id] = call
        self._spawn(self._outbound_flow(call))
        return web.json_response(
            {
                "data": {
                    "call_control_id": call.call_control_id,
                    "call_leg_id": call.leg_id,
                    "call_session_id": call.session_id,
                    "is_alive": False,
                    "record_type": "call",
                }
            }
        )

    async def _outbound_flow(self, call: SimCall) -> None:
        await self.send(call, "call.initiated", {"state": "bridging"})
        await asyncio.sleep(self.answer_delay)
        if call.ended:
            return
        if self.outcome is None:
            call.answered = True
            call.heard.answer(self.callee)
            await self.send(call, "call.answered", {})
            self._open_stream(call)
            if call.amd != "disabled":
                self._spawn(self._detect(call))
        else:
            source = self.outcome_source
            if self.outcome in ("timeout", "no_answer", "not_found", "unspecified"):
                source = "unknown"
            await self._end(call, self.outcome, source)

    async def _action(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        call = self.calls.get(request.match_info["id"])
        if call is None:
            return self._error(404, "10005", "Resource not found")
        if call.ended:
            return self._error(422, "90018", "Call has already ended")
        command_id = body.get("command_id")
        if command_id and command_id in call.commands:
            return web.json_response({"data": {"result": "ok"}})  # Telnyx ignores repeats
        if command_id:
            call.commands.add(command_id)
        if body.get("client_state"):
            call.client_state = body["client_state"]
        action = request.match_info["action"]
        refused = self._schema(action, body)
        if refused is not None:
            return refused
        handler = {
            "answer": self._answer,
            "speak": self._speak,
            "hangup": self._hangup,
            "reject": self._reject,
            "send_dtmf": self._dtmf,
            "transcription_start": self._transcription_start,
            "transcription_stop": self._transcription_stop,
        }.get(action)
        if handler is None:
            return self._error(422, "10015", f"unsupported action {action}")
        return await handler(call, body)

    def _schema(self, command: str, body: dict[str, Any]) -> web.Response | None:
        """422 for a field the Call Control schema does not define for `command`."""
        try:
            problems = check_command(command, body)
        except KeyError:
            return None  # an action the simulator does not know is refused below
        if not problems:
            return None
        self.schema_errors.extend(f"{command}: {p}" for p in problems)
        return self._error(422, "10015", "; ".join(problems))

    @staticmethod
    def _ok() -> web.Response:
        return web.json_response({"data": {"result": "ok"}})

    async def _answer(self, call: SimCall, body: dict[str, Any]) -> web.Response:
        if call.direction != "incoming" or call.answered:
            return self._error(422, "90061", "Call already answered")
        call.answered = True
        call.stream_request = _stream_fields(body)

        async def answered() -> None:
            await self.send(call, "call.answered", {})
            self._open_stream(call)

        self._spawn(answered())
        return self._ok()

    # ------------------------------------------------------------------ media streams

    def _open_stream(self, call: SimCall) -> None:
        if call.stream_request is None or call.ended:
            return
        stream = SimStream(call.stream_request["stream_url"], dict(call.stream_request))
        call.streams.append(stream)
        if self.stream_outcome == "failed":
            self._spawn(
                self.send(
                    call,
                    "streaming.failed",
                    {
                        "failure_reason": "connection_failed",
                        "stream_id": stream.stream_id,
                        "stream_type": "websocket",
                        "stream_params": {"stream_url": stream.url},
                    },
                )
            )
            return
        stream.task = asyncio.get_running_loop().create_task(self._run_stream(call, stream))
        self._tasks.add(stream.task)
        stream.task.add_done_callback(self._tasks.discard)

    async def _run_stream(self, call: SimCall, stream: SimStream) -> None:
        assert self._session is not None
        try:
            async with self._session.ws_connect(stream.url) as ws:
                stream.ws = ws
                stream.open = True
                await self._stream_send(stream, {"event": "connected", "version": "1.0.0"})
                await self._stream_send(
                    stream,
                    {
                        "event": "start",
                        "sequence_number": str(stream.sequence + 1),
                        "start": {
                            "user_id": str(uuid.uuid4()),
                            "call_control_id": call.call_control_id,
                            "client_state": call.client_state,
                            "media_format": {
                                "encoding": "PCMU",
                                "sample_rate": 8000,
                                "channels": 1,
                            },
                        },
                        "stream_id": stream.stream_id,
                    },
                )
                await self.notify()
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        await self._stream_message(stream, json.loads(message.data))
                stream.close_code = ws.close_code
        except aiohttp.ClientError:
            pass
        finally:
            stream.open = False
            with contextlib.suppress(Exception):
                await self.notify()

    async def _stream_send(self, stream: SimStream, message: dict[str, Any]) -> None:
        assert stream.ws is not None
        stream.sequence += 1
        self.sent_frames.setdefault(str(message.get("event")), message)
        await stream.ws.send_str(json.dumps(message, separators=(",", ":")))

    async def _stream_message(self, stream: SimStream, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "media":
            stream.events.append(("audio", base64.b64decode(message["media"]["payload"])))
        elif event == "mark":
            name = message["mark"]["name"]
            stream.events.append(("mark", name))
            await self._stream_send(
                stream,
                {
                    "event": "mark",
                    "sequence_number": str(stream.sequence + 1),
                    "stream_id": stream.stream_id,
                    "mark": {"name": name},
                },
            )
        elif event == "clear":
            stream.events.append(("clear", None))
        await self.notify()

    async def send_audio(self, call: SimCall, audio: bytes) -> None:
        """The caller's voice: PCMU 8 kHz in 20 ms `media` messages on the live stream."""
        stream = call.streams[-1]
        for offset in range(0, len(audio), 160):
            await self._stream_send(
                stream,
                {
                    "event": "media",
                    "sequence_number": str(stream.sequence + 1),
                    "media": {
                        "track": "inbound",
                        "chunk": str(offset // 160 + 1),
                        "timestamp": str(offset // 8),
                        "payload": base64.b64encode(audio[offset : offset + 160]).decode(),
                    },
                    "stream_id": stream.stream_id,
                },
            )

    async def stream_error(
        self,
        call: SimCall,
        code: str = "100005",
        title: str = "rate_limit_reached",
        detail: str = "Too many requests",
    ) -> None:
        """An `error` frame on the live stream (Telnyx's sample shape)."""
        stream = call.streams[-1]
        await self._stream_send(
            stream,
            {
                "stream_id": stream.stream_id,
                "event": "error",
                "sequence_number": str(stream.sequence + 1),
                "error": {"title": title, "code": code, "detail": detail},
            },
        )

    async def press(self, call: SimCall, digits: str, *, via: str = "webhook") -> None:
        """The caller presses keys, one report per key: `call.dtmf.received` webhooks
        (`via="webhook"`) or `dtmf` frames on the live stream (`via="stream"`)."""
        for digit in digits:
            if via == "stream":
                stream = call.streams[-1]
                await self._stream_send(
                    stream,
                    {
                        "event": "dtmf",
                        "stream_id": stream.stream_id,
                        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                        "sequence_number": str(stream.sequence + 1),
                        "dtmf": {"digit": digit},
                    },
                )
            else:
                await self.send(
                    call, "call.dtmf.received", {"digit": digit, "from": call.from_, "to": call.to}
                )

    async def _close_streams(self, call: SimCall) -> None:
        """The call is over: `stop`, then close, every open stream."""
        for stream in call.streams:
            if stream.ws is None or stream.ws.closed:
                continue
            with contextlib.suppress(Exception):
                await self._stream_send(
                    stream,
                    {
                        "event": "stop",
                        "sequence_number": str(stream.sequence + 1),
                        "stop": {"user_id": "sim", "call_control_id": call.call_control_id},
                        "stream_id": stream.stream_id,
                    },
                )
                await stream.ws.close()

    async def _speak(self, call: SimCall, body: dict[str, Any]) -> web.Response:
        if not body.get("payload") or not body.get("voice"):
            return self._error(422, "10032", "payload and voice are required")
        call.spoken.append(body["payload"])
        call.heard.say(body["payload"])
        listens = ":turn:" in _decode(body.get("client_state"))
        self._spawn(self._speak_flow(call, listens))
        return self._ok()

    async def _speak_flow(self, call: SimCall, listens: bool) -> None:
        await self.send(call, "call.speak.started", {})
        await asyncio.sleep(self.speak_seconds)
        if call.ended:
            return
        await self.send(call, "call.speak.ended", {"status": "completed"})
        if listens and self.replies:
            try:
                await self.wait_for(lambda: call.transcribing or call.ended, 2.0)
            except TimeoutError:
                return
            if not call.ended and self.replies:
                await self.caller_says(call, self.replies.pop(0))

    async def _hangup(self, call: SimCall, body: dict[str, Any]) -> web.Response:
        # We are the caller of an outbound call and the callee of an inbound one.
        source = "caller" if call.direction == "outgoing" else "callee"
        cause = "normal_clearing" if call.answered else "originator_cancel"
        self._spawn(self._end(call, cause, source))
        call.ended = True
        return self._ok()

    async def _reject(self, call: SimCall, body: dict[str, Any]) -> web.Response:
        cause = "user_busy" if body.get("cause") == "USER_BUSY" else "call_rejected"
        self._spawn(self._end(call, cause, "callee"))
        call.ended = True
        return self._ok()

    async def _dtmf(self, call: SimCall, body: dict[str, Any]) -> web.Response:
        call.dtmf.append(body.get("digits", ""))
        return self._ok()

    async def _transcription_start(self, call: SimCall, body: dict[str, Any]) -> web.Response:
        call.transcribing = True
        await self.notify()
        return self._ok()

    async def _transcription_stop(self, call: SimCall, body: dict[str, Any]) -> web.Response:
        call.transcribing = False
        return self._ok()

    async def _status(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        if self.status_error is not None:
            return self._error(self.status_error, "10007", "Unexpected error")
        call = self.calls.get(request.match_info["id"])
        if call is None:
            return self._error(404, "10005", "Resource not found")
        return web.json_response(
            {
                "data": {
                    "call_control_id": call.call_control_id,
                    "call_leg_id": call.leg_id,
                    "call_session_id": call.session_id,
                    "is_alive": not call.ended,
                    "call_duration": 1,
                    "record_type": "call",
                }
            }
        )

    # ------------------------------------------------------------------ webhooks

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Telnyx's headers for `body`: Ed25519 over `f"{timestamp}|{body}"`."""
        ts = str(timestamp if timestamp is not None else int(time.time() + self.clock_offset))
        signature = self.signing_key.sign(ts.encode() + b"|" + body).signature
        return {
            "Content-Type": "application/json",
            "telnyx-timestamp": ts,
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
        }

    async def _detect(self, call: SimCall) -> None:
        """Answering-machine detection as Telnyx reports it (shapes: the AMD fixture): the
        verdict (`call.machine[.premium].detection.ended`), then for a machine in a mode that
        learns the greeting's end, `call.machine[.premium].greeting.ended` at its beep."""
        premium = call.amd.startswith("premium")
        prefix = "call.machine.premium." if premium else "call.machine."
        kind = self.callee.kind
        results = (
            {"human": "human_residence", "machine": "machine", "fax": "fax_detected"}
            if premium
            else {"human": "human", "machine": "machine", "fax": "not_sure"}
        )
        await asyncio.sleep(self.callee.decide_seconds)
        if call.ended:
            return
        shape = {
            e["data"]["event_type"]: e["data"]["payload"]
            for e in fixture("telnyx_amd_webhooks.json")["events"]
        }
        fields = {
            k: v
            for k, v in shape[prefix + "detection.ended"].items()
            if k in ("from", "to", "result")
        }
        fields.update({"from": call.from_, "to": call.to, "result": results[kind]})
        await self.send(call, prefix + "detection.ended", fields)
        if kind != "machine" or call.amd == "detect":
            return
        ends_at = call.heard.greeting_ends_at or time.monotonic()
        await asyncio.sleep(max(0.0, ends_at - time.monotonic()))
        if not call.ended:
            await self.send(call, prefix + "greeting.ended", dict(fields, result="beep_detected"))

    def event_body(
        self, call: SimCall, event_type: str, extra: dict[str, Any], event_id: str | None = None
    ) -> tuple[str, bytes]:
        """A webhook document for `call` (payload fields plus `extra`)."""
        eid = event_id or str(uuid.uuid4())
        payload: dict[str, Any] = {
            "call_control_id": call.call_control_id,
            "call_leg_id": call.leg_id,
            "call_session_id": call.session_id,
            "client_state": call.client_state,
            "connection_id": CONNECTION_ID,
        }
        if event_type in CAPTURED_EVENTS:
            payload["calling_party_type"] = "pstn"
        if event_type == "call.initiated":  # the only webhook that says which way it goes
            payload.update(
                {
                    "direction": call.direction,
                    "state": "parked" if call.direction == "incoming" else "bridging",
                    "caller_id_name": call.from_,
                    "start_time": call.started,
                }
            )
        if event_type in ("call.initiated", "call.answered", "call.hangup"):
            payload.update({"from": call.from_, "to": call.to, "start_time": call.started})
        payload.update(extra)
        document = {
            "data": {
                "record_type": "event",
                "id": eid,
                "event_type": event_type,
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                "payload": payload,
            },
            "meta": {"attempt": 1, "delivered_to": call.webhook_url},
        }
        return eid, json.dumps(document).encode()

    async def send(
        self,
        call: SimCall,
        event_type: str,
        extra: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> Delivery | None:
        """Sign and POST one webhook (or queue it while `hold` is on)."""
        if self.hold:
            self.held.append((call, event_type, dict(extra or {}, _event_id=event_id)))
            await self.notify()
            return None
        eid, body = self.event_body(call, event_type, extra or {}, event_id)
        return await self.post(Delivery(event_type, eid, body, self.sign(body), call.webhook_url))

    async def post(self, delivery: Delivery) -> Delivery:
        """Deliver (or re-deliver) a webhook and record the daemon's answer."""
        assert self._session is not None
        async with self._session.post(
            delivery.url, data=delivery.body, headers=delivery.headers
        ) as response:
            delivery.status = response.status
            delivery.reply = await response.read()
        self.deliveries.append(delivery)
        await self.notify()
        return delivery

    async def resend(self, delivery: Delivery) -> Delivery:
        """A Telnyx retry: the same document (same `data.id`), signed again a second later.

        Ed25519 is deterministic, so a retry within the same second would carry the very same
        signature and be caught as a replay; the later timestamp makes it a new delivery.
        """
        ts = int(delivery.headers["telnyx-timestamp"]) + 1
        return await self.post(
            Delivery(
                delivery.event_type,
                delivery.event_id,
                delivery.body,
                self.sign(delivery.body, ts),
                delivery.url,
            )
        )

    async def replay(self, delivery: Delivery) -> Delivery:
        """A byte-identical second delivery (same timestamp and signature)."""
        return await self.post(
            Delivery(
                delivery.event_type,
                delivery.event_id,
                delivery.body,
                dict(delivery.headers),
                delivery.url,
            )
        )

    async def release(self, *, reverse: bool = False) -> list[Delivery]:
        """Stop holding and send what was held, in order or reversed."""
        self.hold = False
        held, self.held = self.held, []
        sent = []
        for call, event_type, extra in reversed(held) if reverse else held:
            event_id = extra.pop("_event_id", None)
            delivery = await self.send(call, event_type, extra, event_id=event_id)
            if delivery is not None:
                sent.append(delivery)
        return sent

    def delivered(self, event_type: str) -> list[Delivery]:
        """Deliveries of one event type so far."""
        return [d for d in self.deliveries if d.event_type == event_type]

    # ------------------------------------------------------------------ the caller

    async def inbound(self, from_: str, to: str, webhook_url: str) -> SimCall:
        """Someone calls our number: `call.initiated` with direction `incoming`."""
        call = SimCall(f"v3:{uuid.uuid4().hex}", "incoming", from_, to, webhook_url)
        self.calls[call.call_control_id] = call
        await self.send(call, "call.initiated", {})
        return call

    async def caller_says(
        self, call: SimCall, text: str, *, is_final: bool = True, confidence: float = 0.93
    ) -> Delivery | None:
        """A `call.transcription` of the caller's words (client_state as Telnyx echoes it)."""
        return await self.send(
            call,
            "call.transcription",
            {
                "transcription_data": {
                    "transcript": text,
                    "is_final": is_final,
                    "confidence": confidence,
                    "transcription_track": "inbound",
                }
            },
        )

    async def caller_hangup(
        self, call: SimCall, cause: str = "normal_clearing", source: str | None = None
    ) -> Delivery | None:
        """The person on the phone hangs up: the callee of an outbound call, the caller of an
        inbound one (unless `source` says otherwise)."""
        if source is None:
            source = "callee" if call.direction == "outgoing" else "caller"
        return await self._end(call, cause, source)

    async def _end(self, call: SimCall, cause: str, source: str) -> Delivery | None:
        assert cause in SIP_CAUSES, f"Telnyx never sends hangup_cause {cause!r}"
        assert source in ("caller", "callee", "unknown"), source
        call.ended = True
        await self._close_streams(call)
        return await self.send(
            call,
            "call.hangup",
            {
                "hangup_cause": cause,
                "hangup_source": source,
                "sip_hangup_cause": SIP_CAUSES[cause],
                "end_time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            },
        )

    def only_call(self) -> SimCall:
        """The single call placed so far."""
        assert len(self.calls) == 1, list(self.calls)
        return next(iter(self.calls.values()))


def _stream_fields(body: dict[str, Any]) -> dict[str, Any] | None:
    """The `stream_*` fields of a dial/answer command, when it asks for a stream."""
    if not body.get("stream_url"):
        return None
    return {k: v for k, v in body.items() if k.startswith("stream_")}


def _decode(client_state: object) -> str:
    if not isinstance(client_state, str):
        return ""
    try:
        return base64.b64decode(client_state).decode()
    except ValueError:
        return ""
