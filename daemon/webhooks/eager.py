"""A request's aiohttp handler runs in the loop turn that hands it the request (Python 3.11).

aiohttp answers each request in a task of its own, created by the connection's task once the
parser has the request. From Python 3.12 it starts that task eagerly (``eager_start``): the
handler runs at once, inside the connection task's turn. On 3.11 (this project's floor) the new
task only runs in the next turn of the loop. With a few hundred media streams on the loop a
turn takes milliseconds, and a voice webhook waits a whole one between being parsed and being
handled (docs/benchmarks.md measured 12-26 ms per turn at the top of a ramp to 400 calls).

:func:`install` sets a task factory that gives aiohttp's request-handling coroutine the 3.12
behaviour: its first step runs inside :meth:`loop.create_task` itself; a handler that finishes
there (a webhook: read the body already buffered, verify, store, answer) comes back as a
settled future, and one that has to wait carries on in an ordinary task from where it stopped.
Every other coroutine gets an ordinary task, as without a factory.

During that first step the current task is still the connection's task, which is awaiting the
handler; a timeout entered there and expiring later cancels the connection task, which passes
the cancellation to the handler's task it awaits, so the timeout still ends the handler's wait
(as ``request.task`` in aiohttp is the connection's task anyway). Nothing is installed on 3.12+
(aiohttp starts the task eagerly itself), when the loop already has a task factory, or when
aiohttp's handler is not where this module looks (the plain path: one more turn, same result).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from types import CodeType
from typing import Any

try:
    from aiohttp.web_protocol import RequestHandler

    _HANDLE_REQUEST: CodeType | None = RequestHandler._handle_request.__code__
except (ImportError, AttributeError):  # pragma: no cover - another aiohttp layout
    _HANDLE_REQUEST = None


class _Settled(asyncio.Future[Any]):
    """What ``create_task`` returns for a handler that finished in its first step."""

    def set_name(self, name: object) -> None:
        """``create_task(name=...)`` names its task; there is nothing left to name."""


class _Resume:
    """Awaitable that carries on a coroutine already stepped once: it hands the task the
    future the coroutine was waiting on, then relays every value and exception both ways."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: object) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._waiting
        self._waiting = None
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # the task throws in (a cancellation): pass it on
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _carry_on(resume: _Resume) -> Any:
    return await resume


class EagerFactory:
    """Task factory: coroutines whose code is in ``eager`` take their first step at once."""

    __slots__ = ("eager", "started")

    def __init__(self, eager: frozenset[CodeType]) -> None:
        self.eager = eager
        self.started = 0
        """Coroutines stepped eagerly (a figure for tests and diagnostics)."""

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Future[Any]:
        if getattr(coro, "cr_code", None) not in self.eager:
            return asyncio.Task(coro, loop=loop, context=context)
        self.started += 1
        ctx = contextvars.copy_context() if context is None else context
        try:
            waiting = ctx.run(coro.send, None)
        except StopIteration as stop:
            settled = _Settled(loop=loop)
            settled.set_result(stop.value)
            return settled
        except asyncio.CancelledError:
            settled = _Settled(loop=loop)
            settled.cancel()
            return settled
        except Exception as exc:
            settled = _Settled(loop=loop)
            settled.set_exception(exc)
            return settled
        return asyncio.Task(_carry_on(_Resume(coro, waiting)), loop=loop, context=ctx)


def install(loop: asyncio.AbstractEventLoop) -> EagerFactory | None:
    """Step aiohttp's request handlers eagerly on ``loop``; the factory, or None where that is
    not needed or not possible (see the module text)."""
    if sys.version_info >= (3, 12) or _HANDLE_REQUEST is None:
        return None
    if loop.get_task_factory() is not None:
        return None
    factory = EagerFactory(frozenset({_HANDLE_REQUEST}))
    loop.set_task_factory(factory)  # type: ignore[arg-type]
    return factory
