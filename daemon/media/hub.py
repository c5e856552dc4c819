"""The media hub: per-call stream tokens, the live session of each call, shared speech parts.

The provider issues a token when it renders ``<Connect><Stream>`` (passed as
``<Parameter name="token">``: Twilio drops query strings from stream URLs) and revokes it when
the call ends. A stream's ``start`` is accepted only for a known call whose token matches,
compared in constant time (SPEC 9). The hub also owns the one :class:`Pacer` and the TTS engine
and STT factory every session uses, and ends a call whose stream went away and did not come
back within a short grace (a reconnecting stream keeps its call).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.errors import MediaError
from daemon.media.gcpolicy import GcPolicy
from daemon.media.pacer import DEFAULT_LEAD_SECONDS, Pacer
from daemon.media.playback import DEFAULT_CAPACITY_FRAMES
from daemon.media.prefetch import PREFETCH_SECONDS, Prefetch
from daemon.media.session import MediaSession, UtteranceResult
from daemon.model.events import CallMode, Direction, ProviderEvent
from daemon.model.record import CallRecord
from daemon.speech.sentences import split_sentences
from daemon.speech.stt.base import SttListener, SttSession
from daemon.speech.tts.base import TtsEngine
from daemon.speech.tts.cache import CachedTts
from daemon.tasks import TaskSet

logger = logging.getLogger(__name__)

END_GRACE_SECONDS = 2.0
"""A call whose stream closed is ended unless a new stream binds within this time."""
TOKEN_BYTES = 16

EventSink = Callable[[Sequence[ProviderEvent]], Awaitable[None]]
SttFactory = Callable[[SttListener], SttSession]
UtteranceListener = Callable[[str, UtteranceResult], None]
FailureListener = Callable[[str, str, bool], None]
"""(call id, reason, speech still unheard): a stream failed and the provider takes over."""


class RealtimeAttacher(Protocol):
    """Realtime mode (``daemon.realtime.service.RealtimeService``)."""

    async def attach(self, session: MediaSession) -> bool:
        """Bridge the session to a speech-to-speech model if its call uses one."""


class CallDirectory(Protocol):
    """What the hub asks the engine (``CallEngine`` satisfies it)."""

    async def get(self, call_id: str) -> CallRecord | None:
        """A call by our id or the provider's."""

    async def end(self, call_id: str) -> None:
        """Hang up a call."""


@dataclass(slots=True)
class _Grant:
    token: str
    provider_call_id: str | None


@dataclass(frozen=True, slots=True)
class Admission:
    """A ``start`` the hub accepted: which call the stream belongs to."""

    call_id: str
    provider_call_id: str
    suppress_first: bool
    """An outbound conversation call: its greeting is not interruptible."""
    barge_in: bool
    """False for notify calls (one-way announcements)."""


class MediaHub:
    """Shared state of every media stream of the daemon."""

    def __init__(
        self,
        sink: EventSink,
        *,
        calls: CallDirectory | None = None,
        tts: TtsEngine | None = None,
        stt_factory: SttFactory | None = None,
        pacer: Pacer | None = None,
        lead: float = DEFAULT_LEAD_SECONDS,
        capacity: int = DEFAULT_CAPACITY_FRAMES,
        end_grace_seconds: float = END_GRACE_SECONDS,
    ) -> None:
        """Args:
        sink: the engine's event sink (``CallEngine.apply``).
        calls: call lookups and hang-up; None disables both (tests).
        tts: the TTS engine, or None when calls use the provider's own voice.
        stt_factory: builds an (unconnected) STT session for a listener; None = no STT.
        pacer: the pacing clock (one is made on the running loop when None).
        lead: how far ahead of play time frames are sent.
        capacity: frames queued per stream before synthesis waits.
        end_grace_seconds: how long a closed stream may take to come back.
        """
        self.sink = sink
        self.calls = calls
        self.tts = tts
        self.stt_factory = stt_factory
        self.pacer = pacer or Pacer()
        self.lead = lead
        self.capacity = capacity
        self.end_grace_seconds = end_grace_seconds
        self.realtime: RealtimeAttacher | None = None
        """Realtime mode: offered every new stream before it is bound."""
        self.on_utterance: UtteranceListener | None = None
        """Told what the caller heard of each utterance (for the transcript)."""
        self.on_stream_failure: FailureListener | None = None
        """The provider's fallback when a stream reports an error (Telnyx ``error`` frames)."""
        self.number_tts: dict[str, TtsEngine | None] = {}
        """TTS engines of `[numbers."+E164"]` tables with their own TTS (SPEC 14)."""
        self._call_numbers: dict[str, str] = {}
        self._grants: dict[str, _Grant] = {}
        self._by_provider: dict[str, str] = {}
        self._sessions: dict[str, MediaSession] = {}
        self._waiters: dict[str, list[asyncio.Future[MediaSession]]] = {}
        self._end_timers: dict[str, asyncio.TimerHandle] = {}
        self._prefetched: dict[str, tuple[Prefetch, asyncio.TimerHandle]] = {}
        self._tasks = TaskSet("media")
        self.gc_policy = GcPolicy()
        self.pacer.gc_pauses = self.gc_policy.pauses
        self._dummy = self.new_token()

    # ------------------------------------------------------------------ tokens

    @staticmethod
    def new_token() -> str:
        """16 random bytes, base64url without padding."""
        return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()

    def issue_token(self, call_id: str, provider_call_id: str | None) -> str:
        """The stream token of a call (the same one again while it is not revoked)."""
        grant = self._grants.get(call_id)
        if grant is None:
            grant = _Grant(self.new_token(), provider_call_id)
            self._grants[call_id] = grant
        elif provider_call_id and grant.provider_call_id != provider_call_id:
            if grant.provider_call_id:
                self._by_provider.pop(grant.provider_call_id, None)
            grant.provider_call_id = provider_call_id
        if provider_call_id:
            self._by_provider[provider_call_id] = call_id
        return grant.token

    def tts_for(self, call_id: str) -> TtsEngine | None:
        """The call's TTS: its number table's engine when it has one, else the call TTS."""
        key = self._call_numbers.get(call_id)
        return self.number_tts.get(key, self.tts) if key is not None else self.tts

    def prefetch(self, call_id: str, number: str | None, text: str) -> None:
        """Start synthesising the first sentence of ``text``, to be said on the call's stream
        once it starts (``daemon.media.prefetch``): the vendor's first-byte time then passes
        while the provider connects the stream, not after. Nothing happens when the stream is
        already there, in realtime mode (the model speaks), or without a TTS.
        """
        if call_id in self._sessions or call_id in self._prefetched or self.realtime is not None:
            return
        tts = self.number_tts.get(number, self.tts) if number in self.number_tts else self.tts
        sentences = split_sentences(text)
        if tts is None or not sentences:
            return
        timer = asyncio.get_running_loop().call_later(PREFETCH_SECONDS, self.drop_prefetch, call_id)
        self._prefetched[call_id] = (Prefetch(tts, sentences[0], self.pacer.deferral), timer)

    def take_prefetch(self, call_id: str, text: str) -> AsyncIterator[bytes] | None:
        """The audio synthesised ahead for the call's first sentence when that is ``text``
        (any prefetch of the call is used or dropped here: speech is said in order)."""
        entry = self._prefetched.pop(call_id, None)
        if entry is None:
            return None
        fetch, timer = entry
        timer.cancel()
        if fetch.text != text:
            fetch.cancel()
            return None
        return fetch.chunks()

    def drop_prefetch(self, call_id: str) -> None:
        """Give up the speech synthesised ahead for the call (its vendor request is cancelled):
        the call ended, its stream did not start in time, or it failed and the provider speaks
        with its own voice instead."""
        entry = self._prefetched.pop(call_id, None)
        if entry is not None:
            entry[0].cancel()
            entry[1].cancel()

    def revoke(self, call_id: str) -> None:
        """Forget the call's token (it ended); a live stream of it is closed."""
        self.drop_prefetch(call_id)
        self._call_numbers.pop(call_id, None)
        grant = self._grants.pop(call_id, None)
        if grant is not None and grant.provider_call_id:
            self._by_provider.pop(grant.provider_call_id, None)
        timer = self._end_timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()
        for future in self._waiters.pop(call_id, []):
            if not future.done():  # speech waiting for a stream that will never come
                future.set_exception(
                    MediaError(f"call {call_id} ended before its media stream started")
                )
        session = self._sessions.get(call_id)
        if session is not None:
            session.revoked = True
            session.request_close(1000, "Call ended")

    async def admit(
        self, provider_call_id: str | None, parameters: Mapping[str, str], query_token: str | None
    ) -> Admission | None:
        """Check a ``start``: a known, live call and its token; None refuses (close 1008).

        The call is found by ``parameters["callId"]``, then the provider's call id (directly or
        through the engine, for a token issued before the provider id was known).
        """
        token = parameters.get("token") or query_token or ""
        call_id = parameters.get("callId") or ""
        if call_id not in self._grants and provider_call_id:
            call_id = self._by_provider.get(provider_call_id, "")
            if not call_id and self.calls is not None:
                record = await self.calls.get(provider_call_id)
                call_id = record.call_id if record is not None else ""
        grant = self._grants.get(call_id)
        expected = grant.token if grant is not None else self._dummy
        matches = hmac.compare_digest(expected.encode(), token.encode())
        if grant is None or not matches:
            return None
        record = await self.calls.get(call_id) if self.calls is not None else None
        if self.calls is not None and (record is None or record.is_ended):
            return None
        outbound = record is not None and record.direction is Direction.OUTBOUND
        notify = outbound and record is not None and record.mode is CallMode.NOTIFY
        number = record.metadata.get("number") if record is not None else None
        if isinstance(number, str) and number in self.number_tts:
            self._call_numbers[call_id] = number
        return Admission(
            call_id=call_id,
            provider_call_id=provider_call_id or grant.provider_call_id or call_id,
            suppress_first=outbound and not notify,
            barge_in=not notify,
        )

    # ------------------------------------------------------------------ sessions

    def session(self, call_id: str) -> MediaSession | None:
        """The live session bound to that call."""
        return self._sessions.get(call_id)

    async def wait_session(self, call_id: str) -> MediaSession:
        """The call's session, waiting for its stream to start if needed (a provider asked to
        speak right after answering may be ahead of the stream).

        Raises:
            MediaError: the call ended (its token was revoked) before a stream started.
        """
        session = self._sessions.get(call_id)
        if session is not None:
            return session
        future: asyncio.Future[MediaSession] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(call_id, []).append(future)
        try:
            return await future
        finally:
            waiters = self._waiters.get(call_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(call_id, None)

    @property
    def sessions(self) -> int:
        """Live sessions."""
        return len(self._sessions)

    def bind(self, session: MediaSession) -> None:
        """Make ``session`` the call's live stream (a newer stream replaces an older one)."""
        timer = self._end_timers.pop(session.call_id, None)
        if timer is not None:
            timer.cancel()
        old = self._sessions.get(session.call_id)
        self._sessions[session.call_id] = session
        self.gc_policy.stream_bound()
        if old is not None and old is not session:
            old.replaced = True
            old.request_close(1000, "Replaced by a newer stream")
        for future in self._waiters.pop(session.call_id, []):
            if not future.done():
                future.set_result(session)

    def unbind(self, session: MediaSession, *, end_call: bool) -> None:
        """The session's socket closed; end its call after the grace unless one comes back."""
        if self._sessions.get(session.call_id) is session:
            del self._sessions[session.call_id]
            self.gc_policy.stream_ended(len(self._sessions))
        if not end_call or session.replaced or session.revoked or self.calls is None:
            return
        if session.call_id not in self._grants or session.call_id in self._sessions:
            return
        loop = asyncio.get_running_loop()
        self._end_timers[session.call_id] = loop.call_later(
            self.end_grace_seconds, self._grace_over, session.call_id
        )

    def _grace_over(self, call_id: str) -> None:
        self._end_timers.pop(call_id, None)
        if call_id in self._sessions or self.calls is None:
            return
        logger.info("call %s: media stream closed and did not come back; ending the call", call_id)
        self.spawn(self.calls.end(call_id), f"media-end-{call_id}")

    def stream_failed(self, session: MediaSession, reason: str) -> None:
        """The provider says the stream failed: hand the call to the provider's own voice.

        Without a listener the error is only logged (the stream may well go on). With one, the
        stream is closed without ending the call, and the listener is told whether speech was
        still unheard, so it can say it again its own way (SPEC 10: no silent wait).
        """
        listener = self.on_stream_failure
        if listener is None or session.revoked or session.replaced:
            logger.warning("call %s: media stream error: %s", session.call_id, reason)
            return
        unheard = session.speaking
        session.revoked = True  # its close must not end the call
        session.request_close(1000, "Stream error; provider speech takes over")
        try:
            listener(session.call_id, reason, unheard)
        except Exception:
            logger.exception("stream failure listener failed")

    def utterance_finished(self, session: MediaSession, result: UtteranceResult) -> None:
        """A session settled an utterance: tell the listener, if any."""
        if self.on_utterance is not None:
            try:
                self.on_utterance(session.call_id, result)
            except Exception:
                logger.exception("utterance listener failed")

    # ------------------------------------------------------------------ tasks, shutdown

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a background task the hub owns (awaited at close)."""
        return self._tasks.spawn(coro, name)

    async def close(self) -> None:
        """Shutdown: close every stream (1001), stop timers and the pacer."""
        for timer in self._end_timers.values():
            timer.cancel()
        self._end_timers.clear()
        for call_id in list(self._prefetched):
            self.drop_prefetch(call_id)
        for session in list(self._sessions.values()):
            session.revoked = True  # the daemon is stopping: calls stay up for the restart
            session.request_close(1001, "Server shutting down")
            await session.close()
        self._sessions.clear()
        self.gc_policy.close()
        await self._tasks.drain(5)
        await self._tasks.cancel()
        for tts in (self.tts, *self.number_tts.values()):
            if isinstance(tts, CachedTts):
                await tts.close()
        self.pacer.close()
