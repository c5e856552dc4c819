"""A local Twilio: Programmable Voice REST (Basic auth) plus a TwiML interpreter, on 127.0.0.1:0.

REST, as `api.twilio.com` answers it (form-encoded requests, JSON answers, Twilio error bodies
`{"code", "message", "more_info", "status"}`):
- `POST /2010-04-01/Accounts/{sid}/Calls.json` creates a call (`CA` + 32 hex) and records the
  request with repeated values kept (`StatusCallbackEvent`);
- `POST .../Calls/{sid}.json` updates it: `Twiml`/`Url` replace what the call runs, `Status=
  completed` hangs up; unknown sids get 404 with code 20404; `fail_updates_21220 = N` refuses the
  next N TwiML updates with 400/21220 ("Call is not in-progress. Cannot redirect.");
- `GET .../Calls/{sid}.json` returns the call (`fetch_error` makes it fail instead).

The carrier side sends every webhook form-encoded and signed with `X-Twilio-Signature`, computed
by the SDK's own `twilio.request_validator.RequestValidator` over the exact URL it posts to:
status callbacks (initiated, ringing, answered, completed/busy/no-answer/failed/canceled) to
`StatusCallback` (final ones with CallDuration, Duration and SipResponseCode), the `Url` fetch
on answer, `<Redirect>`s, `<Gather>` results (SpeechResult + Confidence, or Digits without the
finishing `#`, to the action URL as rendered, turnToken included) and inbound voice requests;
only fields the vendor samples show (`tests/e2e/test_simulator_shapes.py`). Tests script the
caller: `say_next()`/`caller_says()`, `press()`, `answer()`, `callee_hangup()`, `inbound()`,
`outcome`; on a stream, `SimStream.press()` sends one `dtmf` message per key.

Media streams, as Twilio runs `<Connect><Stream url>` (bidirectional): a websocket to that URL,
its upgrade signed with `X-Twilio-Signature` over the ws(s) URL alone; `connected`, `start`
(streamSid, callSid, the `<Parameter>`s as customParameters, mu-law 8 kHz mediaFormat), then the
caller's audio as 160-byte mu-law `media` frames every 20 ms (silence unless a test queues
audio). Outbound `media` frames are recorded with their arrival time and "played" in real time
from a buffer; a `mark` is echoed once the audio queued before it has played; `clear` drops the
buffered audio and echoes the marks still pending. A hang-up, or TwiML replacing the `<Connect>`,
sends `stop` and closes the socket; the daemon closing the socket ends the `<Connect>` verb and
the TwiML carries on (here: the call ends, nothing follows). See :class:`SimStream`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from daemon.providers.twilio_rest import basic_auth
from tests.fakes._server import FakeServer
from tests.simulators.amd import Callee, Heard, fixture

ACCOUNT_SID = "AC" + "5ef8732a3c49700934481addd5ce1659"
FRAME_BYTES = 160
"""20 ms of 8 kHz mu-law."""
FRAME_SECONDS = 0.02
MULAW_SILENCE = b"\xff"
AUTH_TOKEN = "12345678901234567890123456789012"
API = "/2010-04-01/Accounts/{account}"
AMD_PARAMS = (
    "MachineDetection",
    "AsyncAmd",
    "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod",
    "MachineDetectionTimeout",
)


SIP_RESPONSE_CODES = {
    "completed": "200",
    "busy": "486",
    "no-answer": "487",
    "failed": "404",
    "canceled": "487",
}
"""`SipResponseCode` of each final status callback (the vendor samples' values)."""


def twilio_error(status: int, code: int, message: str) -> web.Response:
    """An error answer in Twilio's format."""
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


@dataclass
class Recorded:
    """One REST request."""

    method: str
    path: str
    form: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        """The first value of a form field."""
        return next((v for k, v in self.form if k == name), None)

    def values(self, name: str) -> list[str]:
        """Every value of a (repeated) form field."""
        return [v for k, v in self.form if k == name]


@dataclass
class Delivery:
    """One signed webhook and the daemon's answer."""

    url: str
    params: dict[str, str]
    headers: dict[str, str]
    kind: str
    status: int = 0
    reply: str = ""


@dataclass
class SimCall:
    """One call as the simulated Twilio sees it."""

    sid: str
    direction: str
    from_: str
    to: str
    url: str | None = None
    twiml: str | None = None
    status_callback: str | None = None
    status_events: list[str] = field(default_factory=list)
    status: str = "queued"
    answered: bool = False
    ended_by: str = ""
    """api (REST Status=completed), twiml (`<Hangup/>`), callee, reject, end-of-twiml."""
    spoken: list[str] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    """Every TwiML document the call ran, in order (inline, fetched or updated)."""
    streams: list[dict[str, str]] = field(default_factory=list)
    """`<Connect><Stream>`s: the url and the `<Parameter>`s."""
    media: list[SimStream] = field(default_factory=list)
    """The media-stream websockets opened for this call, in order."""
    gathering: bool = False
    inbox: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)
    """What the caller gives the next `<Gather>`: ("speech", words) or ("dtmf", keys)."""
    sequence: int = 0
    runner: asyncio.Task[None] | None = None
    amd: dict[str, str] = field(default_factory=dict)
    """The create request's machine-detection parameters (`MachineDetection`, ...)."""
    heard: Heard = field(default_factory=Heard)

    @property
    def ended(self) -> bool:
        """True once the call is over."""
        return bool(self.ended_by)

    def to_json(self, account: str) -> dict[str, Any]:
        """The Call resource as Twilio returns it."""
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        return {
            "sid": self.sid,
            "account_sid": account,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "status": self.status,
            "direction": self.direction,
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "start_time": now if self.answered else None,
            "end_time": now if self.ended else None,
            "duration": "1" if self.ended else None,
            "price": None,
            "price_unit": "USD",
            "answered_by": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "annotation": None,
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{self.sid}.json",
            "subresource_uris": {},
        }


@dataclass
class OutboundFrame:
    """One `media` frame the daemon sent on a stream, as it arrived."""

    at: float
    """`time.monotonic()` on arrival."""
    audio: bytes


class SimStream:
    """One bidirectional media stream as Twilio runs it: the websocket client side.

    Records everything the daemon sends (`received`, with arrival times), the outbound audio
    (`frames`), the marks it sent and Twilio's echoes of them (`marks`, `echoed`), and `clear`s.
    Outbound audio is buffered and played out in real time (20 ms a frame); a mark is echoed
    when every frame queued before it has played. Caller audio goes out as 160-byte mu-law
    `media` frames every 20 ms: what `say_audio()` queued, silence otherwise.
    """

    def __init__(
        self,
        sim: TwilioSimulator,
        call: SimCall,
        url: str,
        parameters: dict[str, str],
        *,
        sign: bool = True,
    ) -> None:
        self.sim = sim
        self.call = call
        self.url = url
        self.parameters = dict(parameters)
        self.sign = sign
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.handshake_status: int | None = None
        """The HTTP status of a refused upgrade (0: nobody listening); None once upgraded."""
        self.received: list[tuple[float, dict[str, Any]]] = []
        """Every message from the daemon, with its arrival time."""
        self.frames: list[OutboundFrame] = []
        self.marks: list[tuple[float, str]] = []
        """Marks the daemon sent (arrival time, name)."""
        self.echoed: list[tuple[float, str]] = []
        """Marks echoed back (time, name): played, or pending when a `clear` came."""
        self.clears: list[float] = []
        self.played = 0
        """Outbound frames played out to the caller."""
        self.dropped = 0
        """Outbound frames a `clear` dropped before they played."""
        self.caller_frames = 0
        """Inbound `media` frames sent (the caller's audio)."""
        self.opened_at: float | None = None
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.closed = False
        self.stop_sent = False
        self.detached = False
        """Dropped by the test: the call's `<Connect>` goes on waiting instead of ending."""
        self._caller_audio = bytearray()
        self._buffer: deque[bytes | str] = deque()
        self._wake = asyncio.Event()
        self._sequence = 0
        self._reader: asyncio.Task[None] | None = None
        self._helpers: list[asyncio.Task[None]] = []

    @property
    def is_open(self) -> bool:
        """Upgraded and not closed yet."""
        return self.ws is not None and not self.closed

    def of(self, event: str) -> list[tuple[float, dict[str, Any]]]:
        """The received messages of one event type."""
        return [(at, m) for at, m in self.received if m.get("event") == event]

    def say_audio(self, audio: bytes) -> None:
        """The caller says `audio` (mu-law 8 kHz): sent in the next inbound frames."""
        self._caller_audio += audio

    # ------------------------------------------------------------------ wire

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    async def _send(self, message: dict[str, Any]) -> None:
        if self.ws is None or self.ws.closed:
            return
        self.sim.sent_frames.setdefault(str(message.get("event")), message)
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await self.ws.send_str(json.dumps(message, separators=(",", ":")))

    async def connect(self) -> bool:
        """Upgrade (signed as Twilio signs it), then `connected` and `start`."""
        assert self.sim._session is not None
        headers: dict[str, str] = {}
        if self.sign:
            headers["X-Twilio-Signature"] = self.sim.validator.compute_signature(self.url, {})
        try:
            self.ws = await self.sim._session.ws_connect(self.url, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            self.handshake_status = exc.status
        except (aiohttp.ClientError, OSError):
            self.handshake_status = 0
        if self.ws is None:
            self.closed = True
            await self.sim.notify()
            return False
        self.opened_at = time.monotonic()
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {
            "accountSid": self.sim.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call.sid,
            "tracks": ["inbound"],
            "customParameters": self.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await self._send(
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "start": start,
                "streamSid": self.stream_sid,
            }
        )
        self._reader = self.sim._spawn(self._read())
        self._helpers = [self.sim._spawn(self._play())]
        if self.sim.stream_caller_audio:
            self._helpers.append(self.sim._spawn(self._speak()))
        await self.sim.notify()
        return True

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._on_message(time.monotonic(), json.loads(message.data))
                    await self.sim.notify()
        finally:
            self.closed = True
            self.closed_at = time.monotonic()
            self.close_code = self.ws.close_code
            for task in self._helpers:
                task.cancel()
            await self.sim.notify()

    def _on_message(self, at: float, message: dict[str, Any]) -> None:
        self.received.append((at, message))
        event = message.get("event")
        if event == "media":
            audio = base64.b64decode(message["media"]["payload"])
            self.frames.append(OutboundFrame(at, audio))
            self._buffer.append(audio)
            self._wake.set()
        elif event == "mark":
            name = str(message["mark"]["name"])
            self.marks.append((at, name))
            self._buffer.append(name)
            self._wake.set()
        elif event == "clear":
            self.clears.append(at)
            pending = [item for item in self._buffer if isinstance(item, str)]
            self.dropped += len(self._buffer) - len(pending)
            self._buffer.clear()
            for name in pending:  # Twilio echoes the marks a clear dropped
                self.sim._spawn(self._echo(name))

    async def _echo(self, name: str) -> None:
        self.echoed.append((time.monotonic(), name))
        await self._send(
            {
                "event": "mark",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )
        await self.sim.notify()

    async def _play(self) -> None:
        """Real-time playout of the outbound buffer; marks echo when they reach its head.

        Frames play back to back on one clock (a late wake-up does not shift it); the clock
        restarts only after an underrun (the buffer ran dry) or a stall of over 100 ms.
        """
        loop = asyncio.get_running_loop()
        clock = 0.0
        while True:
            waited = False
            while not self._buffer:
                waited = True
                self._wake.clear()
                await self._wake.wait()
            item = self._buffer.popleft()
            if isinstance(item, str):
                await self._echo(item)
                continue
            now = loop.time()
            if waited or clock < now - 0.1:
                clock = max(clock, now)
            clock += FRAME_SECONDS * len(item) / FRAME_BYTES
            await asyncio.sleep(max(0.0, clock - now))
            self.played += 1

    async def _speak(self) -> None:
        """The caller's side: one 20 ms mu-law frame per tick on an absolute grid."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        chunk = 0
        while True:
            audio = bytes(self._caller_audio[:FRAME_BYTES])
            del self._caller_audio[:FRAME_BYTES]
            audio += MULAW_SILENCE * (FRAME_BYTES - len(audio))
            chunk += 1
            media = {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str((chunk - 1) * 20),
                "payload": base64.b64encode(audio).decode("ascii"),
            }
            await self._send(
                {
                    "event": "media",
                    "sequenceNumber": self._next_sequence(),
                    "media": media,
                    "streamSid": self.stream_sid,
                }
            )
            self.caller_frames += 1
            due += FRAME_SECONDS
            await asyncio.sleep(max(0.0, due - loop.time()))

    # ------------------------------------------------------------------ ending

    async def press(self, digits: str) -> None:
        """The caller presses keys: one `dtmf` message per key, as Twilio sends them."""
        for digit in digits:
            await self._send(
                {
                    "event": "dtmf",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": self._next_sequence(),
                    "dtmf": {"track": "inbound_track", "digit": digit},
                }
            )

    async def stop(self) -> None:
        """Twilio ends the stream (hang-up, or new TwiML): `stop`, then close the socket."""
        if self.stop_sent or not self.is_open:
            return
        self.stop_sent = True
        await self._send(
            {
                "event": "stop",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.sim.account_sid, "callSid": self.call.sid},
            }
        )
        await self.close()

    async def close(self) -> None:
        """Close the socket (no `stop`) and wait for the reader to finish."""
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await self.ws.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            await asyncio.wait({self._reader})  # a cancellation of *this* task propagates

    async def drop(self, *, send_stop: bool = False) -> None:
        """The stream goes away while the call stays up at Twilio (a broken media leg):
        the call's `<Connect>` keeps waiting instead of moving on."""
        self.detached = True
        if send_stop:
            await self.stop()
        else:
            await self.close()

    async def ended(self) -> None:
        """Wait until the daemon closed the socket (forever once the test dropped it)."""
        if self._reader is not None:
            await asyncio.wait({self._reader})  # a cancellation of *this* task propagates
        if self.detached:
            await asyncio.Event().wait()


class TwilioSimulator(FakeServer):
    """`api_base_url` is the origin; credentials `ACCOUNT_SID`/`AUTH_TOKEN`."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.validator = RequestValidator(auth_token)
        self.requests: list[Recorded] = []
        self.calls: dict[str, SimCall] = {}
        self.deliveries: list[Delivery] = []
        self.ring_delay = 0.02
        self.say_seconds = 0.02
        self.max_pause_seconds = 60.0
        """A cap on `<Pause>` so a keep-alive loop ends in a test."""
        self.listen_seconds: float | None = None
        """Caps a `<Gather timeout>` wait for the caller (None = the Gather's own timeout)."""
        self.auto_answer = True
        self.callee = Callee()
        """Who picks up: a person, a voicemail box or a fax (for machine detection)."""
        self.outcome: str | None = None
        """busy, no-answer or failed instead of answering."""
        self.replies: list[str] = []
        """What the caller says at the next `<Gather>`s (any call), in order."""
        self.fail_create: tuple[int, int, str] | None = None
        self.fail_updates_21220 = 0
        self.fetch_error: int | None = None
        self.stream_media = True
        """Open the websocket of a `<Connect><Stream url="ws(s)://...">` (False: only record it)."""
        self.stream_connect_delay = 0.0
        """Seconds between reading `<Connect><Stream>` and opening its websocket (Twilio takes
        a few hundred milliseconds on a real call)."""
        self.sign_streams = True
        self.stream_caller_audio = True
        """Send the caller's 20 ms frames (silence unless queued) on every open stream."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.sent_frames: dict[str, dict[str, Any]] = {}
        """The first stream message of each event any stream sent (shape checks)."""
        super().__init__()

    @property
    def api_base_url(self) -> str:
        """What `twilio.api_base_url` must be."""
        return self.origin

    def _routes(self, app: web.Application) -> None:
        app.router.add_post(API + "/Calls.json", self._create)
        app.router.add_post(API + "/Calls/{sid}.json", self._update)
        app.router.add_get(API + "/Calls/{sid}.json", self._fetch)
        app.router.add_get(API + ".json", self._account)

    async def start(self) -> None:
        """Listen, and open the client that calls the webhooks."""
        await super().start()
        # Twilio has no client-side connection cap: one websocket per streamed call.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def _before_close(self) -> None:
        runners = [c.runner for c in self.calls.values() if c.runner is not None]
        for task in [*runners, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._tasks, *runners, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ REST

    async def _authorised(self, request: web.Request) -> Recorded | web.Response:
        form = parse_qsl(await request.text(), keep_blank_values=True)
        recorded = Recorded(request.method, request.path, form)
        self.requests.append(recorded)
        await self.notify()
        expected = basic_auth(self.account_sid, self.auth_token)
        if (
            request.headers.get("Authorization") != expected
            or request.match_info["account"] != self.account_sid
        ):
            return twilio_error(401, 20003, "Authenticate")
        return recorded

    def recorded(self, method: str, suffix: str) -> list[Recorded]:
        """REST requests by method whose path ends with `suffix` (e.g. `/Calls.json`)."""
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    @property
    def creates(self) -> list[Recorded]:
        """Every `Calls.json` create request."""
        return self.recorded("POST", "/Calls.json")

    async def _create(self, request: web.Request) -> web.Response:
        rec = await self._authorised(request)
        if isinstance(rec, web.Response):
            return rec
        if self.fail_create is not None:
            return twilio_error(*self.fail_create)
        if not rec.get("To"):
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not rec.get("From"):
            return twilio_error(400, 21213, "No 'From' number is specified")
        if not rec.get("Url") and not rec.get("Twiml"):
            return twilio_error(400, 21205, "Url parameter is required.")
        call = SimCall(
            "CA" + secrets.token_hex(16),
            "outbound-api",
            rec.get("From") or "",
            rec.get("To") or "",
            url=rec.get("Url"),
            twiml=rec.get("Twiml"),
            status_callback=rec.get("StatusCallback"),
            status_events=rec.values("StatusCallbackEvent") or ["completed"],
        )
        call.amd = {name: value for name in AMD_PARAMS if (value := rec.get(name))}
        self.calls[call.sid] = call
        call.runner = asyncio.get_running_loop().create_task(self._outbound(call))
        return web.json_response(call.to_json(self.account_sid), status=201)

    async def _update(self, request: web.Request) -> web.Response:
        rec = await self._authorised(request)
        if isinstance(rec, web.Response):
            return rec
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        if rec.get("Status") in ("completed", "canceled"):
            if not call.ended:
                self._stop(call)
                status = "completed" if call.answered else "canceled"
                self._spawn(self._end(call, status, "api"))  # Twilio calls back afterwards
            return web.json_response(call.to_json(self.account_sid))
        twiml, url = rec.get("Twiml"), rec.get("Url")
        if twiml or url:
            if self.fail_updates_21220 > 0 or call.ended or not call.answered:
                self.fail_updates_21220 = max(0, self.fail_updates_21220 - 1)
                return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            self._stop(call)
            call.runner = asyncio.get_running_loop().create_task(
                self._run(call, url=url, document=twiml)
            )
        return web.json_response(call.to_json(self.account_sid))

    async def _account(self, request: web.Request) -> web.Response:
        """GET the Account resource (what `doctor`/`smoke` fetch to test credentials)."""
        recorded = await self._authorised(request)
        if isinstance(recorded, web.Response):
            return recorded
        return web.json_response(
            {
                "sid": self.account_sid,
                "friendly_name": "simulated account",
                "status": "active",
                "type": "Full",
                "owner_account_sid": self.account_sid,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}.json",
            }
        )

    async def _fetch(self, request: web.Request) -> web.Response:
        rec = await self._authorised(request)
        if isinstance(rec, web.Response):
            return rec
        if self.fetch_error is not None:
            return twilio_error(self.fetch_error, 20500, "An internal server error has occurred")
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        return web.json_response(call.to_json(self.account_sid))

    # ------------------------------------------------------------------ signed webhooks

    def sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        """Headers of a webhook: `X-Twilio-Signature` by the SDK's RequestValidator."""
        return {
            "X-Twilio-Signature": self.validator.compute_signature(url, params),
            "Content-Type": "application/x-www-form-urlencoded",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }

    def _params(self, call: SimCall, extra: dict[str, str]) -> dict[str, str]:
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": call.status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
        }
        params.update(extra)
        return params

    async def webhook(self, call: SimCall, url: str, extra: dict[str, str], kind: str) -> Delivery:
        """POST a signed webhook for `call` to `url` and record the answer."""
        params = self._params(call, extra)
        return await self.post(Delivery(url, params, self.sign(url, params), kind))

    async def post(self, delivery: Delivery) -> Delivery:
        """Send (or re-send) a delivery."""
        assert self._session is not None
        self.deliveries.append(delivery)  # recorded when sent: the daemon may act before replying
        try:
            async with self._session.post(
                delivery.url, data=urlencode(delivery.params), headers=delivery.headers
            ) as response:
                delivery.status = response.status
                delivery.reply = await response.text()
        except aiohttp.ClientError:
            delivery.status = 0  # nobody listening (the daemon is down): Twilio gives up
        await self.notify()
        return delivery

    async def replay(self, delivery: Delivery) -> Delivery:
        """The same request again, byte for byte (signature included)."""
        return await self.post(
            Delivery(delivery.url, dict(delivery.params), dict(delivery.headers), delivery.kind)
        )

    async def _status(self, call: SimCall, status: str, event: str) -> None:
        call.status = status
        await self.notify()
        if not call.status_callback or event not in call.status_events:
            return
        call.sequence += 1
        extra = {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.sequence - 1),
            "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
        }
        if status in SIP_RESPONSE_CODES:
            extra["CallDuration"] = "1" if call.answered else "0"
            extra["Duration"] = "1" if call.answered else "0"
            extra["SipResponseCode"] = SIP_RESPONSE_CODES[status]
        await self.webhook(call, call.status_callback, extra, "status")

    # ------------------------------------------------------------------ carrier

    async def _outbound(self, call: SimCall) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._status(call, "initiated", "initiated")
            await asyncio.sleep(self.ring_delay)
            await self._status(call, "ringing", "ringing")
            if self.outcome in ("busy", "no-answer", "failed"):
                await self._end(call, self.outcome, "callee")
                return
            if self.auto_answer:
                await asyncio.sleep(self.ring_delay)
                await self._answer(call)

    async def answer(self, sid: str) -> None:
        """The callee picks up a ringing call (with `auto_answer = False`)."""
        await self._answer(self.calls[sid])

    async def _answer(self, call: SimCall) -> None:
        if call.answered or call.ended:
            return
        call.answered = True
        call.status = "in-progress"
        call.heard.answer(self.callee)
        self._spawn(self._status(call, "in-progress", "answered"))
        if call.amd.get("MachineDetection") and call.amd.get("AsyncAmd") == "true":
            self._spawn(self._detect(call))
        runner = self._run(call, url=call.url, document=call.twiml)
        if call.runner is asyncio.current_task():
            await runner
        else:
            self._stop(call)
            call.runner = asyncio.get_running_loop().create_task(runner)

    async def _run(self, call: SimCall, *, url: str | None, document: str | None) -> None:
        """Run inline TwiML or fetch `url`, following redirects and Gather actions."""
        with contextlib.suppress(asyncio.CancelledError):
            params: dict[str, str] = {}
            kind = "voice"
            while not call.ended:
                if document is None:
                    if url is None:
                        break
                    delivery = await self.webhook(call, url, params, kind)
                    if delivery.status != 200:
                        await self._say(call, "An application error has occurred.")
                        await self._end(call, "completed", "error")
                        return
                    document = delivery.reply
                if not call.answered and "<Reject" not in document:
                    call.answered = True  # an inbound call is answered by its first TwiML
                    call.status = "in-progress"
                call.documents.append(document)
                await self.notify()
                url, params, kind = await self._execute(call, document)
                document = None
                if url is None:
                    break
            if not call.ended:
                await self._end(call, "completed", "end-of-twiml")

    async def _execute(
        self, call: SimCall, document: str
    ) -> tuple[str | None, dict[str, str], str]:
        """Run one document; return where it leads (redirect or Gather action)."""
        root = ET.fromstring(document)
        for verb in root:
            if call.ended:
                break
            if verb.tag == "Say":
                await self._say(call, verb.text or "")
            elif verb.tag == "Pause":
                await asyncio.sleep(min(float(verb.get("length", "1")), self.max_pause_seconds))
            elif verb.tag == "Play":
                call.digits.append(verb.get("digits", ""))
                await self.notify()
            elif verb.tag == "Hangup":
                await self._end(call, "completed", "twiml")
            elif verb.tag == "Reject":
                await self._end(call, "busy", "reject")
            elif verb.tag == "Redirect":
                return (verb.text or "").strip(), {}, "redirect"
            elif verb.tag == "Gather":
                heard = await self._gather(call, verb)
                if heard is not None:
                    return verb.get("action") or "", _gathered(verb, *heard), "gather"
            elif verb.tag == "Connect":
                await self._connect(call, verb)
        return None, {}, ""

    async def _connect(self, call: SimCall, verb: ET.Element) -> None:
        """`<Connect><Stream>`: open the stream; return once the daemon closed it (or it could
        not connect: Twilio goes on with the TwiML)."""
        opened: SimStream | None = None
        for stream in verb.iter("Stream"):
            url = stream.get("url", "")
            parameters = {p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter")}
            call.streams.append({"url": url, **parameters})
            if opened is None and self.stream_media and url.startswith(("ws:", "wss:")):
                if self.stream_connect_delay:
                    await asyncio.sleep(self.stream_connect_delay)
                opened = await self.open_stream(call, parameters, url, sign=self.sign_streams)
        await self.notify()
        if opened is None or not opened.is_open:
            if opened is None:
                await asyncio.Event().wait()  # until an update or a hang-up replaces it
            return  # the stream could not connect: Twilio goes on with the TwiML
        try:
            await opened.ended()  # the daemon closed it: the next verb runs
        finally:
            await opened.stop()  # a hang-up or new TwiML ends the stream

    async def _say(self, call: SimCall, text: str) -> None:
        call.heard.say(text)
        call.spoken.append(text)
        await self.notify()
        await asyncio.sleep(self.say_seconds)

    async def _gather(self, call: SimCall, verb: ET.Element) -> tuple[str, str] | None:
        """What the caller gives the `<Gather>`: ("speech", words) or ("dtmf", keys)."""
        for child in verb:
            if child.tag == "Say":
                await self._say(call, child.text or "")
        inputs = verb.get("input", "dtmf").split()
        if self.replies and "speech" in inputs:
            return ("speech", self.replies.pop(0))
        wait = float(verb.get("timeout", "5"))
        if self.listen_seconds is not None:
            wait = min(wait, self.listen_seconds)
        call.gathering = True
        await self.notify()
        try:
            async with asyncio.timeout(wait):
                return await call.inbox.get()
        except TimeoutError:
            return None
        finally:
            call.gathering = False
            await self.notify()

    def _stop(self, call: SimCall) -> None:
        if call.runner is not None and call.runner is not asyncio.current_task():
            call.runner.cancel()

    async def _end(self, call: SimCall, status: str, by: str) -> None:
        if call.ended:
            return
        call.ended_by = by
        call.status = status
        for stream in call.media:
            await stream.stop()
        await self._status(call, status, "completed")

    async def _detect(self, call: SimCall) -> None:
        """Async AMD: `AnsweredBy` posted to `AsyncAmdStatusCallback` (the fixture's shape).

        `DetectMessageEnd` reports a machine only once its greeting ended (`machine_end_beep`);
        `Enable` reports `machine_start` as soon as it decided.
        """
        callee = self.callee
        if callee.kind == "machine" and call.amd["MachineDetection"] == "DetectMessageEnd":
            await asyncio.sleep(callee.greeting_seconds)
            answered_by = "machine_end_beep"
        else:
            await asyncio.sleep(callee.decide_seconds)
            answered_by = {"machine": "machine_start", "fax": "fax"}.get(callee.kind, "human")
        url = call.amd.get("AsyncAmdStatusCallback")
        if call.ended or not url:
            return
        params = fixture("twilio_amd_callbacks.json")["callback"]
        elapsed = time.monotonic() - (call.heard.answered_at or time.monotonic())
        params.update(
            AccountSid=self.account_sid,
            CallSid=call.sid,
            AnsweredBy=answered_by,
            MachineDetectionDuration=str(round(elapsed * 1000)),
        )
        await self.post(Delivery(url, params, self.sign(url, params), "amd"))

    # ------------------------------------------------------------------ the caller

    def say_next(self, text: str) -> None:
        """The caller will say `text` at the next `<Gather>` (of any call)."""
        self.replies.append(text)

    async def caller_says(self, call: SimCall, text: str) -> None:
        """The caller speaks; heard by the current (or next) `<Gather>` of `call`."""
        await call.inbox.put(("speech", text))

    async def press(self, call: SimCall, digits: str) -> None:
        """The caller types keys (ending with `#`) into the current (or next) `<Gather>`;
        on a streamed call use `SimStream.press`."""
        await call.inbox.put(("dtmf", digits))

    async def callee_hangup(self, sid: str) -> None:
        """The person on the phone hangs up."""
        call = self.calls[sid]
        self._stop(call)
        await self._end(call, "completed", "callee")

    async def inbound(self, from_: str, to: str, voice_url: str) -> SimCall:
        """Someone calls our number; Twilio posts the voice request to the number's URL."""
        call = SimCall(
            "CA" + secrets.token_hex(16), "inbound", from_, to, url=voice_url, status="ringing"
        )
        self.calls[call.sid] = call
        call.runner = asyncio.get_running_loop().create_task(
            self._run(call, url=voice_url, document=None)
        )
        return call

    async def open_stream(
        self,
        call: SimCall,
        parameters: dict[str, str],
        url: str | None = None,
        *,
        sign: bool = True,
    ) -> SimStream:
        """Open a media stream for `call` as Twilio does (`url` defaults to the call's last
        `<Stream url>`); also how a test opens a second, forged or reconnecting stream."""
        if url is None:
            url = call.streams[-1]["url"]
        stream = SimStream(self, call, url, parameters, sign=sign)
        call.media.append(stream)
        await stream.connect()
        return stream

    def only_call(self) -> SimCall:
        """The single call so far."""
        assert len(self.calls) == 1, self.calls
        return next(iter(self.calls.values()))


def _gathered(verb: ET.Element, kind: str, value: str) -> dict[str, str]:
    """The parameters Twilio posts to a `<Gather>` action for what the caller gave."""
    if kind == "dtmf":  # Twilio leaves out the finishOnKey (#)
        return {"Digits": value.removesuffix(verb.get("finishOnKey", "#"))}
    return {"SpeechResult": value, "Confidence": "0.9137"}
