"""Telnyx's Call Control request schema, read from the telnyx SDK's parameter types.

The SDK's `*Params` TypedDicts are generated from Telnyx's OpenAPI spec, so they are the oracle
for what each command may carry (SPEC 10: every command sends only fields the schema defines
for it). The simulator refuses a command with any other field, as a strict Telnyx would, and
unit tests check each payload builder against the same types. Importing the SDK is slow, so
only tests and the simulator pay for it; the daemon never imports it.
"""

from __future__ import annotations

import functools
import importlib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

_PARAMS = {
    "dial": ("telnyx.types.call_dial_params", "CallDialParams"),
    "answer": ("telnyx.types.calls.action_answer_params", "ActionAnswerParams"),
    "speak": ("telnyx.types.calls.action_speak_params", "ActionSpeakParams"),
    "hangup": ("telnyx.types.calls.action_hangup_params", "ActionHangupParams"),
    "reject": ("telnyx.types.calls.action_reject_params", "ActionRejectParams"),
    "send_dtmf": ("telnyx.types.calls.action_send_dtmf_params", "ActionSendDtmfParams"),
    "transcription_start": (
        "telnyx.types.calls.action_start_transcription_params",
        "ActionStartTranscriptionParams",
    ),
    "transcription_stop": (
        "telnyx.types.calls.action_stop_transcription_params",
        "ActionStopTranscriptionParams",
    ),
    "streaming_start": (
        "telnyx.types.calls.action_start_streaming_params",
        "ActionStartStreamingParams",
    ),
}
"""Our command name -> the SDK's parameter type of that endpoint."""


@functools.cache
def params_type(command: str) -> Any:
    """The SDK TypedDict of one command (`dial` or an `actions/<name>`)."""
    module, name = _PARAMS[command]
    return getattr(importlib.import_module(module), name)


@functools.cache
def _fields(typed_dict: Any) -> dict[str, Any]:
    """Wire name (the SDK's `PropertyInfo(alias=...)`, e.g. `from_` -> `from`) -> type."""
    fields: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(typed_dict, include_extras=True).items():
        wire = name
        while get_origin(hint) in (typing.Required, typing.NotRequired):
            hint = get_args(hint)[0]
        if get_origin(hint) is typing.Annotated:
            for meta in hint.__metadata__:
                wire = getattr(meta, "alias", None) or wire
            hint = get_args(hint)[0]
        fields[wire] = hint
    return fields


def check_command(command: str, body: Mapping[str, Any]) -> list[str]:
    """Every way `body` departs from the schema of `command` (empty: it conforms)."""
    return _check_dict(params_type(command), body, "")


def _check_dict(typed_dict: Any, value: Mapping[str, Any], path: str) -> list[str]:
    fields = _fields(typed_dict)
    problems: list[str] = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}{key}: not a field of {typed_dict.__name__}")
            continue
        problems += _check(fields[key], item, f"{path}{key}")
    return problems


def _is_int(value: Any) -> tuple[bool, str]:
    return isinstance(value, int) and not isinstance(value, bool), "an integer"


def _is_number(value: Any) -> tuple[bool, str]:
    return isinstance(value, int | float) and not isinstance(value, bool), "a number"


_SCALARS: dict[Any, Any] = {
    bool: lambda value: (isinstance(value, bool), "a boolean"),
    int: _is_int,
    float: _is_number,
    str: lambda value: (isinstance(value, str), "a string"),
}
"""Scalar hints: whether a value fits, and what was expected."""


def _check(hint: Any, value: Any, path: str) -> list[str]:
    origin = get_origin(hint)
    if origin in (typing.Annotated, typing.Required, typing.NotRequired):
        return _check(get_args(hint)[0], value, path)
    if origin is Literal:
        allowed = get_args(hint)
        return [] if value in allowed else [f"{path}: {value!r} is not one of {allowed}"]
    if origin in (typing.Union, types.UnionType):
        results = [_check(option, value, path) for option in get_args(hint)]
        return [] if any(not r for r in results) else min(results, key=len)
    if typing.is_typeddict(hint):
        if not isinstance(value, Mapping):
            return [f"{path}: expected an object"]
        return _check_dict(hint, value, f"{path}.")
    if hint in _SCALARS:
        ok, expected = _SCALARS[hint](value)
        return [] if ok else [f"{path}: expected {expected}"]
    if origin in (list, Sequence, Iterable, typing.Iterable):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        (item,) = get_args(hint) or (Any,)
        return [p for i, v in enumerate(value) for p in _check(item, v, f"{path}[{i}]")]
    if hint is type(None):
        return [] if value is None else [f"{path}: expected null"]
    return []  # anything richer (dicts of Any, datetimes) is not ours to send
