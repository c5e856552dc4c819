"""What every provider does the same way: hold the engine's sink, the daemon context and its
own background tasks, once `bind()` has been called."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from daemon.errors import ConfigError
from daemon.providers.base import EventSink, ProviderContext
from daemon.tasks import TaskSet

if TYPE_CHECKING:
    from daemon.config.model import Config


class BoundProvider:
    """Shared state of a provider; subclasses add their protocol and `_on_bind`."""

    name = "provider"

    def __init__(self) -> None:
        self._sink: EventSink | None = None
        self._context: ProviderContext | None = None
        self._tasks = TaskSet(self.name)

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
