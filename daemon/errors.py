"""The one error tree of voicecall.

Every error the daemon raises on purpose is a :class:`VoicecallError`. Each class carries the
JSON-RPC application code it maps to (SPEC section 5), so the RPC layer never guesses, and the
CLI maps the same codes to exit statuses. This module is stdlib-only: the CLI imports it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RpcCode:
    """JSON-RPC 2.0 error codes: the standard ones and voicecall's application codes."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    CALL_NOT_FOUND = -32001
    INVALID_CALL_STATE = -32002
    PROVIDER_ERROR = -32003
    CONFIG_ERROR = -32004
    TIMED_OUT = -32005
    LIMIT_REACHED = -32006
    STORE_UNAVAILABLE = -32007


class VoicecallError(Exception):
    """Base of every error voicecall raises on purpose."""

    rpc_code: ClassVar[int] = RpcCode.INTERNAL_ERROR

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(VoicecallError):
    """The configuration is invalid, or a capability it needs is not configured."""

    rpc_code = RpcCode.CONFIG_ERROR

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class InvalidParamsError(VoicecallError):
    """An RPC or tool call named a parameter with the wrong type or value."""

    rpc_code = RpcCode.INVALID_PARAMS


class CallError(VoicecallError):
    """A call operation was refused."""

    rpc_code = RpcCode.INVALID_CALL_STATE


class CallNotFoundError(CallError):
    """No call has the given id."""

    rpc_code = RpcCode.CALL_NOT_FOUND

    def __init__(self, call_id: str) -> None:
        super().__init__(
            f"no call with id {call_id!r}; list calls with `voicecall status`", callId=call_id
        )


class InvalidTransitionError(CallError):
    """A call was asked to move to a state its current state does not allow."""

    def __init__(self, call_id: str, current: str, target: str) -> None:
        super().__init__(
            f"call {call_id} cannot go from {current} to {target}",
            callId=call_id,
            state=current,
        )


class LimitReachedError(VoicecallError):
    """A configured limit (such as max_concurrent_calls) is reached."""

    rpc_code = RpcCode.LIMIT_REACHED


class OperationTimeoutError(VoicecallError):
    """An operation waited longer than it was allowed to."""

    rpc_code = RpcCode.TIMED_OUT


class WaitCancelledError(OperationTimeoutError):
    """A client gave up waiting (`voicecall.cancel`, sent by Ctrl-C): the wait ends at once."""


class ProviderError(VoicecallError):
    """The telephony provider refused or failed a request."""

    rpc_code = RpcCode.PROVIDER_ERROR


class ProviderAuthError(ProviderError):
    """The provider rejected our credentials."""


class ProviderRequestError(ProviderError):
    """A request to the provider failed (network, HTTP status, bad answer)."""


class WebhookSignatureError(VoicecallError):
    """A webhook or media-stream upgrade failed signature verification."""


class MediaError(VoicecallError):
    """A media stream broke its protocol or limits."""


class TunnelError(VoicecallError):
    """Publishing the webhook (ngrok, Tailscale) failed."""

    rpc_code = RpcCode.CONFIG_ERROR


class SpeechError(VoicecallError):
    """A TTS, STT or auto-responder vendor failed."""

    rpc_code = RpcCode.PROVIDER_ERROR


class StoreError(VoicecallError):
    """The durable store could not be opened or written (disk full, I/O error, locked).

    Whatever raised it was not made durable, so it was not done: the caller may retry later.
    """

    rpc_code = RpcCode.STORE_UNAVAILABLE


class StoreInUseError(StoreError):
    """Another daemon holds the store (a SQLite folder), or runs with this daemon's id on a
    shared PostgreSQL store."""


class CallMovedError(StoreError):
    """The call is run by another daemon sharing the store now (this one was presumed dead and
    its calls were taken over): nothing was written."""


class CallStoredElsewhereError(StoreError):
    """A new call's first delivery reached two daemons sharing the store at once, and the other
    stored the call first (one live record per provider call id): nothing was written here; the
    other daemon runs the call and answers its webhooks."""


def forget_tracebacks(error: BaseException | None) -> None:
    """Drop the tracebacks of ``error`` and of the errors it was raised from or during.

    An error an object keeps (a socket's last error) holds its traceback, whose frames hold
    their locals, usually that object: a reference cycle, which only a full collection
    frees, and the media plane keeps those rare while calls are live
    (``daemon.media.gcpolicy``). Call it once the error was reported or will not be.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        if error.__cause__ is not None:
            forget_tracebacks(error.__cause__)
        error = error.__context__
