"""What every provider does the same way: hold the engine's sink, the daemon context and its
own background tasks, once `bind()` has been called."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from daemon.errors import ConfigError
from daemon.providers.base import EventSink, ProviderContext
from daemon.tasks import TaskSet

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.model.record import CallRecord

REMEMBERED_VOICES = 10_000
"""Per-call voices kept (oldest forgotten first): far more than live calls."""


class BoundProvider:
    """Shared state of a provider; subclasses add their protocol and `_on_bind`."""

    name = "provider"

    def __init__(self) -> None:
        self._sink: EventSink | None = None
        self._context: ProviderContext | None = None
        self._tasks = TaskSet(self.name)
        self._number_voices: OrderedDict[str, str] = OrderedDict()

    def bind(self, sink: EventSink, context: ProviderContext) -> None:
        """Attach the engine's event sink and the daemon context (once, before `start`)."""
        self._sink = sink
        self._context = context
        self._on_bind(context)

    def _on_bind(self, context: ProviderContext) -> None:
        """Prepare what depends on the config (webhook verifiers)."""

    @property
    def _config(self) -> Config:
        if self._context is None:
            raise ConfigError(f"the {self.name} provider is not bound to the daemon yet")
        return self._context.config

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._tasks.spawn(coro, name)

    def _note_number(self, call: CallRecord) -> None:
        """Remember the TTS voice of an inbound call's `[numbers."+E164"]` table (SPEC 14), for
        the provider's own voice (`<Say>`, `speak`) on that call."""
        key = call.metadata.get("number")
        table = self._config.numbers.get(key) if isinstance(key, str) else None
        if table is not None and table.effective_tts is not None:
            self._number_voices[call.call_id] = table.effective_tts.openai.voice
            while len(self._number_voices) > REMEMBERED_VOICES:
                self._number_voices.popitem(last=False)

    def _tts_voice(self, call_id: str | None) -> str:
        """The TTS voice setting of a call: its number table's, else the call TTS's."""
        return self._number_voices.get(call_id or "") or self._config.tts.openai.voice
