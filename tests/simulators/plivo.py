"""A local Plivo: Voice API REST (Basic auth) plus a Plivo XML interpreter, on 127.0.0.1:0.

Like Plivo it rings (`ring_url`), answers by fetching `answer_url`, runs the XML it gets back
(`<Speak>`, `<Wait>`, `<GetInput inputType="dtmf speech">`, `<Redirect>`, `<Hangup>`), posts
speech (`InputType=speech`, `Speech`) or keys (`InputType=dtmf`, `Digits`) to the GetInput
`action` and runs that answer, fetches the `aleg_url` of a transfer (`POST /Call/{uuid}/
legs=aleg`), and reports the end on `hangup_url` with Plivo's CallStatus, HangupSource and
HangupCause / HangupCauseName / HangupCauseCode triples (`../shared/vendor_samples/`). Every
request it makes is form-encoded and signed with `X-Plivo-Signature-V3` and a nonce, computed
with the plivo SDK's own `plivo.utils.signature_v3` helpers. Tests script the caller: `replies`
(one per GetInput), `caller_says()`, `press()`, `caller_hangup()`, `inbound()`, `outcome`
(busy, no-answer, timeout, failed), and `replay()` re-sends a delivery byte for byte. A call
detail record (`GET /Call/{uuid}/`) has Plivo's fields: `answer_time` (null if never
answered), no `call_state`.

`<Stream bidirectional="true">` opens the websocket like Plivo's audio streams: a `start`
(`sequenceNumber` 1, `start.callId` = CallUUID, `start.streamId`, `mediaFormat` mu-law 8 kHz;
`extra_headers` as `k=v;k=v` when the element has `extraHeaders`), caller audio as `media`
messages (`send_audio()`), keys as `dtmf` frames (`press(..., via="stream")`); it records
`playAudio` audio, answers each `checkpoint` with `playedStream` (or `played`, as one Plivo
article names it: `checkpoint_echo`) and each `clearAudio` with `clearedAudio`. When the call
ends the socket just closes: Plivo reports a stream's end on the HTTP callbacks, never with a
socket `stop`. With `keepCallAlive` the XML goes on once the socket closes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

from daemon.providers.plivo import basic_auth
from tests.fakes._server import FakeServer
from tests.simulators.amd import Callee, Heard, fixture

AUTH_ID = "MAZDQ1ZJIYMDZKMMZKYM"
AUTH_TOKEN = "ZDU3YjU0ZjBkM2NmYmU3NWY1NjhhOWI3Y2Q5ZjUz"

_OUTCOMES = {
    "busy": ("busy", "Call recipient", "USER_BUSY", "Busy Line", "3010"),
    "no-answer": ("no-answer", "Plivo", "NO_ANSWER", "No Answer", "3020"),
    "timeout": ("timeout", "Plivo", "RECOVERY_ON_TIMER_EXPIRE", "Ring Timeout Reached", "3000"),
    "failed": ("failed", "Carrier", "UNALLOCATED_NUMBER", "Invalid Destination Address", "2000"),
}
"""`outcome` -> CallStatus, HangupSource, HangupCause, HangupCauseName, HangupCauseCode (the
rows of Plivo's hangup-causes table in the vendor samples)."""
NORMAL = ("NORMAL_CLEARING", "Normal Hangup", "4000")
END_OF_XML = ("NORMAL_CLEARING", "End Of XML Instructions", "4010")
CANCELED = ("ORIGINATOR_CANCEL", "Canceled", "1000")


@dataclass
class SimStream:
    """One audio stream (`<Stream>`) as the simulated Plivo plays it."""

    url: str
    attributes: dict[str, str]
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ws: aiohttp.ClientWebSocketResponse | None = None
    events: list[tuple[str, Any]] = field(default_factory=list)
    """What the daemon sent, in order: ("audio", bytes), ("checkpoint", name), ("clear", None)."""
    open: bool = False
    close_code: int | None = None
    sequence: int = 0

    @property
    def extra_headers(self) -> str:
        """The element's `extraHeaders` as Plivo delivers them: `k=v;k=v`."""
        return ";".join(
            p.strip() for p in self.attributes.get("extraHeaders", "").split(",") if p.strip()
        )

    def audio(self) -> list[bytes]:
        """Every `playAudio` payload, decoded."""
        return [value for kind, value in self.events if kind == "audio"]

    def checkpoints(self) -> list[str]:
        """Every `checkpoint` name."""
        return [value for kind, value in self.events if kind == "checkpoint"]

    @property
    def cleared(self) -> int:
        """How many `clearAudio` arrived."""
        return sum(1 for kind, _ in self.events if kind == "clear")


@dataclass
class SimCall:
    """One call as the simulated Plivo sees it."""

    call_uuid: str
    request_uuid: str | None
    direction: str
    from_: str
    to: str
    answer_url: str
    hangup_url: str | None
    ring_url: str | None = None
    answered: bool = False
    ended: bool = False
    end_source: str = ""
    spoken: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    """Every XML document the call ran, in order."""
    streams: list[SimStream] = field(default_factory=list)
    inbox: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)
    """What the caller gives the next `<GetInput>`: ("speech", words) or ("dtmf", keys)."""
    listening: bool = False
    runner: asyncio.Task[None] | None = None
    amd: dict[str, str] = field(default_factory=dict)
    """The create request's `machine_detection*` parameters."""
    heard: Heard = field(default_factory=Heard)


@dataclass
class Recorded:
    """One REST request."""

    method: str
    path: str
    body: dict[str, Any]
    query: dict[str, str]


@dataclass
class Delivery:
    """One signed callback and the daemon's answer."""

    url: str
    params: dict[str, str]
    headers: dict[str, str]
    status: int = 0
    reply: str = ""


class PlivoSimulator(FakeServer):
    """`api_base_url` is `origin + "/v1"`; credentials `AUTH_ID`/`AUTH_TOKEN`."""

    def __init__(self, auth_id: str = AUTH_ID, auth_token: str = AUTH_TOKEN) -> None:
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.requests: list[Recorded] = []
        self.calls: dict[str, SimCall] = {}
        self.by_request: dict[str, SimCall] = {}
        self.deliveries: list[Delivery] = []
        self.ring_delay = 0.02
        self.answer_delay = 0.05
        self.speak_seconds = 0.05
        self.listen_seconds = 5.0
        """How long a `<GetInput>` waits for the caller (Plivo: `executionTimeout`)."""
        self.max_wait_seconds = 30.0
        """A cap on `<Wait>` so a keep-alive loop still ends in a test."""
        self.outcome: str | None = None
        self.callee = Callee()
        """Who picks up outbound calls: a person, a voicemail box or a fax (for AMD)."""
        self.report_humans = False
        """Plivo's docs describe the machine_detection_url call on *detecting a machine*; True
        also reports a person (`Machine=false`) when detection ends."""
        self.sent_frames: dict[str, dict[str, Any]] = {}
        """The first stream message of each event this simulator sent (shape checks)."""
        self.checkpoint_echo = "playedStream"
        """The event that answers a `checkpoint` (`played` in one Plivo support article)."""
        self.replies: list[str] = []
        self.status_error: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        super().__init__()

    @property
    def api_base_url(self) -> str:
        """What `plivo.api_base_url` must be."""
        return f"{self.origin}/v1"

    def _routes(self, app: web.Application) -> None:
        base = "/v1/Account/{aid}"
        app.router.add_post(base + "/Call/", self._create)
        app.router.add_post(base + "/Call/{uuid}/", self._transfer)
        app.router.add_delete(base + "/Call/{uuid}/", self._delete_call)
        app.router.add_delete(base + "/Request/{uuid}/", self._delete_request)
        app.router.add_post(base + "/Call/{uuid}/DTMF/", self._dtmf)
        app.router.add_get(base + "/Call/{uuid}/", self._get)

    async def start(self) -> None:
        """Listen, and open the client that calls the webhook."""
        await super().start()
        self._session = aiohttp.ClientSession()

    async def _before_close(self) -> None:
        for call in self.calls.values():
            if call.runner is not None:
                call.runner.cancel()
        for task in list(self._tasks):
            task.cancel()
        runners = [c.runner for c in self.calls.values() if c.runner is not None]
        await asyncio.gather(*self._tasks, *runners, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ REST

    async def _authorised(self, request: web.Request) -> dict[str, Any] | web.Response:
        body: dict[str, Any] = {}
        if request.can_read_body:
            body = await request.json()
        self.requests.append(Recorded(request.method, request.path, body, dict(request.query)))
        await self.notify()
        auth = basic_auth(self.auth_id, self.auth_token)
        if request.headers.get("Authorization") != auth or request.match_info["aid"] != (
            self.auth_id
        ):
            return web.json_response(
                {"api_id": str(uuid.uuid4()), "error": "Authentication failed"}, status=401
            )
        return body

    def recorded(self, method: str, suffix: str) -> list[Recorded]:
        """REST requests by method whose path ends with `suffix` (e.g. `/DTMF/`)."""
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"api_id": str(uuid.uuid4()), "error": "not found"}, status=404)

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        for key in ("from", "to", "answer_url"):
            if not body.get(key):
                return web.json_response({"error": f"{key} is required"}, status=400)
        request_uuid = str(uuid.uuid4())
        call = SimCall(
            str(uuid.uuid4()),
            request_uuid,
            "outbound",
            body["from"],
            body["to"],
            body["answer_url"],
            body.get("hangup_url"),
            ring_url=body.get("ring_url"),
        )
        call.amd = {k: str(v) for k, v in body.items() if k.startswith("machine_detection")}
        self.by_request[request_uuid] = call
        self._spawn(self._outbound(call))
        return web.json_response(
            {"api_id": str(uuid.uuid4()), "message": "call fired", "request_uuid": request_uuid},
            status=201,
        )

    async def _outbound(self, call: SimCall) -> None:
        await asyncio.sleep(self.ring_delay)
        if call.ended:
            return
        self.calls[call.call_uuid] = call
        if call.ring_url:
            await self.callback(call, call.ring_url, {"CallStatus": "ringing", "Event": "Ring"})
        await asyncio.sleep(self.answer_delay)
        if call.ended:
            return
        if self.outcome in _OUTCOMES:
            status, source, *cause = _OUTCOMES[self.outcome]
            await self._end(call, status, source, *cause)
            return
        call.answered = True
        call.heard.answer(self.callee)
        if call.amd.get("machine_detection") in ("true", "hangup"):
            self._spawn(self._detect(call))
        call.runner = asyncio.get_running_loop().create_task(
            self._run_from(
                call, call.answer_url, {"CallStatus": "in-progress", "Event": "StartApp"}
            )
        )

    async def _transfer(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        call = self.calls.get(request.match_info["uuid"])
        if call is None or call.ended:
            return self._not_found()
        if body.get("legs") != "aleg" or not body.get("aleg_url"):
            return web.json_response({"error": "legs and aleg_url are required"}, status=400)
        if call.runner is not None:
            call.runner.cancel()
        call.runner = asyncio.get_running_loop().create_task(
            self._run_from(call, body["aleg_url"], {"CallStatus": "in-progress"})
        )
        return web.json_response(
            {"api_id": str(uuid.uuid4()), "message": "call transferred"}, status=202
        )

    async def _delete_call(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        call = self.calls.get(request.match_info["uuid"])
        if call is None or call.ended or not call.answered:
            # Like Plivo: a call that is still ringing is a request, cancelled at /Request/.
            return self._not_found()
        self._stop(call)
        self._spawn(self._end(call, "completed", "API Request", *NORMAL))
        return web.Response(status=204)

    async def _delete_request(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        call = self.by_request.get(request.match_info["uuid"])
        if call is None or call.ended or call.answered:
            return self._not_found()
        call.ended = True
        self._spawn(self._end(call, "cancel", "API Request", *CANCELED))
        return web.Response(status=204)

    async def _dtmf(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        call = self.calls.get(request.match_info["uuid"])
        if call is None or call.ended:
            return self._not_found()
        call.dtmf.append(str(body.get("digits", "")))
        return web.json_response(
            {"api_id": str(uuid.uuid4()), "message": "digits sent"}, status=202
        )

    async def _get(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if isinstance(body, web.Response):
            return body
        if self.status_error is not None:
            return web.json_response({"error": "internal error"}, status=self.status_error)
        key = request.match_info["uuid"]
        call = self.calls.get(key) or self.by_request.get(key)
        status = request.query.get("status")
        if call is None:
            return self._not_found()
        if status == "live":
            if call.ended or call.call_uuid not in self.calls:
                return self._not_found()
            return web.json_response(
                {
                    "call_status": "in-progress" if call.answered else "ringing",
                    "call_uuid": call.call_uuid,
                    "direction": call.direction,
                }
            )
        if status == "queued":
            if call.ended or call.call_uuid in self.calls:
                return self._not_found()
            return web.json_response({"call_status": "queued", "request_uuid": call.request_uuid})
        if not call.ended:
            return self._not_found()
        return web.json_response(  # the fields of plivo-python's callGetResponse fixture
            {
                "answer_time": "2024-01-01 00:00:01+00:00" if call.answered else None,
                "api_id": str(uuid.uuid4()),
                "bill_duration": 60 if call.answered else 0,
                "call_direction": call.direction,
                "call_duration": 1 if call.answered else 0,
                "call_uuid": call.call_uuid,
                "end_time": "2024-01-01 00:00:02+00:00",
                "from_number": call.from_,
                "initiation_time": "2024-01-01 00:00:00+00:00",
                "to_number": call.to,
                "hangup_source": call.end_source,
            }
        )

    # ------------------------------------------------------------------ signed callbacks

    def sign(self, url: str, params: dict[str, str], nonce: str | None = None) -> dict[str, str]:
        """`X-Plivo-Signature-V3` for a POST of `params` to `url` (the SDK's own algorithm)."""
        nonce = nonce or str(secrets.randbelow(10**20))
        base = construct_post_url(url, dict(params)).decode()
        signature = get_signature_v3(self.auth_token.encode(), base, nonce.encode()).decode()
        return {
            "X-Plivo-Signature-V3": signature,
            "X-Plivo-Signature-V3-Nonce": nonce,
            "Content-Type": "application/x-www-form-urlencoded",
        }

    def _params(self, call: SimCall, extra: dict[str, str]) -> dict[str, str]:
        """Plivo's parameters: the request ids only where its samples show them (the answer and
        hang-up of an outbound call carry the A-leg's, the ring its RequestUUID)."""
        params = {
            "CallUUID": call.call_uuid,
            "From": call.from_,
            "To": call.to,
            "Direction": call.direction,
        }
        event = extra.get("Event")
        if call.request_uuid and event in ("StartApp", "Hangup", "Ring"):
            params["RequestUUID"] = call.request_uuid
            if event != "Ring":
                params["ALegUUID"] = call.call_uuid
                params["ALegRequestUUID"] = call.request_uuid
        params.update(extra)
        return params

    async def _detect(self, call: SimCall) -> None:
        """Asynchronous machine detection: `machine_detection_url` gets the fixture's form
        (`Machine=true`, `Event=MachineDetection`) within `machine_detection_time`."""
        limit = int(call.amd.get("machine_detection_time", "5000")) / 1000
        await asyncio.sleep(min(self.callee.decide_seconds, limit))
        url = call.amd.get("machine_detection_url")
        machine = self.callee.kind in ("machine", "fax")
        if call.ended or not url or not (machine or self.report_humans):
            return
        params = fixture("plivo_amd_callbacks.json")["callback"]
        params.update(self._params(call, {}))
        params.update(
            Machine="true" if machine else "false",
            CallStatus="in-progress",
            IfMachine="hangup" if call.amd["machine_detection"] == "hangup" else "continue",
        )
        await self.post(Delivery(url, params, self.sign(url, params)))

    async def callback(self, call: SimCall, url: str, extra: dict[str, str]) -> Delivery:
        """POST a signed form callback for `call` and record the answer."""
        params = self._params(call, extra)
        return await self.post(Delivery(url, params, self.sign(url, params)))

    async def post(self, delivery: Delivery) -> Delivery:
        """Send (or re-send) a delivery."""
        assert self._session is not None
        async with self._session.post(
            delivery.url, data=urlencode(delivery.params), headers=delivery.headers
        ) as response:
            delivery.status = response.status
            delivery.reply = await response.text()
        self.deliveries.append(delivery)
        await self.notify()
        return delivery

    async def replay(self, delivery: Delivery) -> Delivery:
        """The same request again, nonce and signature included."""
        return await self.post(
            Delivery(delivery.url, dict(delivery.params), dict(delivery.headers))
        )

    # ------------------------------------------------------------------ XML interpreter

    async def _run_from(self, call: SimCall, url: str, extra: dict[str, str]) -> None:
        """Fetch `url` and run the XML, following redirects and GetInput actions."""
        with contextlib.suppress(asyncio.CancelledError):
            next_url: str | None = url
            params = extra
            while next_url is not None and not call.ended:
                delivery = await self.callback(call, next_url, params)
                if delivery.status != 200:
                    await self._end(
                        call, "completed", "Error", "SERVICE_UNAVAILABLE", "XML Fetch Error", "6000"
                    )
                    return
                call.documents.append(delivery.reply)
                await self.notify()
                next_url, params = await self._execute(call, delivery.reply)
            if next_url is None and not call.ended:
                await self._end(call, "completed", "Plivo", *END_OF_XML)

    async def _execute(self, call: SimCall, document: str) -> tuple[str | None, dict[str, str]]:
        """Run one document; return where it leads (redirect/action) or (None, {})."""
        root = ET.fromstring(document)
        for element in root:
            if call.ended:
                return None, {}
            if element.tag == "Speak":
                await self._speak(call, element.text or "")
            elif element.tag == "Wait":
                length = float(element.get("length", "1"))
                await asyncio.sleep(min(length, self.max_wait_seconds))
            elif element.tag == "Hangup":
                self._spawn(self._end(call, "completed", "Answer XML", *NORMAL))
                call.ended = True
                return None, {}
            elif element.tag == "Redirect":
                return (element.text or "").strip(), {"CallStatus": "in-progress"}
            elif element.tag == "Stream":
                await self._stream(call, element)
            elif element.tag == "GetInput":
                heard = await self._get_input(call, element)
                if heard is not None:
                    action = element.get("action", "")
                    kind, value = heard
                    params = {"CallStatus": "in-progress", "InputType": kind, "Event": "GetInput"}
                    if kind == "dtmf":
                        params["Digits"] = value
                    else:
                        params.update({"Speech": value, "SpeechConfidenceScore": "0.91"})
                    if element.get("redirect", "true") == "true":
                        return action, params
                    self._spawn(self.callback(call, action, params))
        return None, {}

    async def _stream(self, call: SimCall, element: ET.Element) -> None:
        """Run a `<Stream>`: until the daemon closes the socket or the call ends."""
        assert self._session is not None
        stream = SimStream((element.text or "").strip(), dict(element.attrib))
        call.streams.append(stream)
        try:
            async with self._session.ws_connect(stream.url, autoclose=True) as ws:
                stream.ws = ws
                stream.open = True
                start: dict[str, Any] = {
                    "event": "start",
                    "sequenceNumber": stream.sequence + 1,
                    "start": {
                        "callId": call.call_uuid,
                        "streamId": stream.stream_id,
                        "accountId": self.auth_id,
                        "tracks": ["inbound"],
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                    },
                }
                if stream.extra_headers:
                    start["extra_headers"] = stream.extra_headers
                await self._stream_send(stream, start)
                await self.notify()
                # No `stop` ever: when the call ends the runner is cancelled and the socket
                # closes (Plivo reports the end on the hangup/status callbacks).
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        await self._stream_message(stream, json.loads(message.data))
                stream.close_code = ws.close_code
        except aiohttp.ClientError:
            pass  # nobody listening: Plivo goes on with the XML
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
        if event == "playAudio":
            stream.events.append(("audio", base64.b64decode(message["media"]["payload"])))
        elif event == "checkpoint":
            stream.events.append(("checkpoint", message["name"]))
            await self._stream_send(
                stream,
                {
                    "event": self.checkpoint_echo,
                    "streamId": stream.stream_id,
                    "name": message["name"],
                },
            )
        elif event == "clearAudio":
            stream.events.append(("clear", None))
            await self._stream_send(
                stream,
                {
                    "sequenceNumber": stream.sequence + 1,
                    "event": "clearedAudio",
                    "streamId": stream.stream_id,
                },
            )
        await self.notify()

    async def send_audio(self, call: SimCall, audio: bytes) -> None:
        """The caller's voice: mu-law 8 kHz in 20 ms `media` messages on the live stream."""
        stream = call.streams[-1]
        for offset in range(0, len(audio), 160):
            chunk = audio[offset : offset + 160]
            message: dict[str, Any] = {
                "event": "media",
                "sequenceNumber": stream.sequence + 1,
                "streamId": stream.stream_id,
                "media": {
                    "track": "inbound",
                    "timestamp": str(int(time.time() * 1000)),
                    "chunk": offset // 160 + 1,
                    "payload": base64.b64encode(chunk).decode(),
                },
            }
            if stream.extra_headers:
                message["extra_headers"] = stream.extra_headers
            await self._stream_send(stream, message)

    async def press(self, call: SimCall, digits: str, *, via: str = "getinput") -> None:
        """The caller presses keys: one `Digits` entry for the current (or next) `<GetInput>`
        (`via="getinput"`), or one `dtmf` frame per key on the live stream (`via="stream"`)."""
        if via != "stream":
            await call.inbox.put(("dtmf", digits))
            return
        stream = call.streams[-1]
        for digit in digits:
            await self._stream_send(
                stream,
                {
                    "event": "dtmf",
                    "sequenceNumber": stream.sequence + 1,
                    "streamId": stream.stream_id,
                    "dtmf": {
                        "track": "inbound",
                        "digit": digit,
                        "timestamp": str(int(time.time() * 1000)),
                    },
                },
            )

    async def _speak(self, call: SimCall, text: str) -> None:
        call.heard.say(text)
        call.spoken.append(text)
        await self.notify()
        await asyncio.sleep(self.speak_seconds)

    async def _get_input(self, call: SimCall, element: ET.Element) -> tuple[str, str] | None:
        """What the caller gives the `<GetInput>`: ("speech", words) or ("dtmf", keys)."""
        for child in element:
            if child.tag == "Speak":
                await self._speak(call, child.text or "")
        kinds = set(element.get("inputType", "dtmf").split())
        if not kinds & {"speech", "dtmf"}:
            return None
        if self.replies and "speech" in kinds:
            return ("speech", self.replies.pop(0))
        call.listening = True
        await self.notify()
        try:
            async with asyncio.timeout(self.listen_seconds):
                return await call.inbox.get()
        except TimeoutError:
            return None
        finally:
            call.listening = False

    # ------------------------------------------------------------------ the caller

    async def inbound(self, from_: str, to: str, webhook_url: str) -> SimCall:
        """Someone calls our number; Plivo fetches the application's answer URL."""
        call = SimCall(
            str(uuid.uuid4()),
            None,
            "inbound",
            from_,
            to,
            webhook_url,
            webhook_url + ("&" if "?" in webhook_url else "?") + "flow=hangup",
        )
        self.calls[call.call_uuid] = call
        call.answered = True
        call.runner = asyncio.get_running_loop().create_task(
            self._run_from(call, webhook_url, {"CallStatus": "ringing", "Event": "StartApp"})
        )
        return call

    async def caller_says(self, call: SimCall, text: str) -> None:
        """The caller speaks; heard by the current (or next) `<GetInput>`."""
        await call.inbox.put(("speech", text))

    async def caller_hangup(self, call: SimCall) -> None:
        """The person on the phone hangs up (Plivo names the callee "Call recipient")."""
        self._stop(call)
        source = "Caller" if call.direction == "inbound" else "Call recipient"
        await self._end(call, "completed", source, *NORMAL)

    def _stop(self, call: SimCall) -> None:
        if call.runner is not None and call.runner is not asyncio.current_task():
            call.runner.cancel()

    async def _end(
        self, call: SimCall, status: str, source: str, cause: str, name: str, code: str
    ) -> None:
        if call.end_source:
            return
        call.ended = True
        call.end_source = source
        if call.hangup_url:
            await self.callback(
                call,
                call.hangup_url,
                {
                    "CallStatus": status,
                    "Event": "Hangup",
                    "HangupSource": source,
                    "HangupCause": cause,
                    "HangupCauseName": name,
                    "HangupCauseCode": code,
                    "Duration": "1",
                    "BillDuration": "60",
                    "EndTime": time.strftime("%Y-%m-%d %H:%M:%S"),
                },
            )

    def only_call(self) -> SimCall:
        """The single call so far."""
        calls = {id(c): c for c in [*self.calls.values(), *self.by_request.values()]}
        assert len(calls) == 1, calls
        return next(iter(calls.values()))
