"""Rendering: `--json` documents and human text. The only module that formats output."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click


def use_color() -> bool:
    """Colour only on a terminal, and never with NO_COLOR set."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def json_text(data: Any) -> str:
    """One compact JSON document on one line."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def emit_json(data: Any) -> None:
    """Print one JSON document (or one JSON line for streams)."""
    click.echo(json_text(data))


def style(text: str, **kwargs: Any) -> str:
    """Style text when colour is on."""
    return click.style(text, **kwargs) if use_color() else text


def call_summary(call: dict[str, Any]) -> str:
    """A multi-line human description of one call record."""
    lines = [
        f"{style(call['callId'], bold=True)}  {call['direction']} {call['mode']}  "
        f"{style(call['state'], fg='green' if call.get('endedAt') is None else 'yellow')}",
        f"  {call.get('from') or '?'} -> {call.get('to') or '?'}  via {call['provider']}"
        + (f" ({call['providerCallId']})" if call.get("providerCallId") else ""),
        f"  started {call['startedAt']}"
        + (f", answered {call['answeredAt']}" if call.get("answeredAt") else "")
        + (f", ended {call['endedAt']} ({call.get('endReason')})" if call.get("endedAt") else ""),
    ]
    metadata = call.get("metadata") or {}
    if metadata.get("number"):
        lines.append(f'  number table [numbers."{metadata["number"]}"]')
    if metadata.get("answeredBy"):
        raw = metadata.get("answeredByRaw")
        lines.append(
            f"  answered by {metadata['answeredBy']}"
            + (f" ({raw})" if raw and raw != metadata["answeredBy"] else "")
        )
    for entry in call.get("transcript") or []:
        who = "bot " if entry["speaker"] == "bot" else "user"
        lines.append(f"  {who}: {entry['text']}")
    return "\n".join(lines)


def call_row(call: dict[str, Any]) -> str:
    """One line per call, for lists."""
    return (
        f"{call['callId']}  {call['state']:<11} {call['direction']:<8} "
        f"{call.get('to') if call['direction'] == 'outbound' else call.get('from')}  "
        f"{call['startedAt']}"
    )


def event_line(event: dict[str, Any]) -> str:
    """One line per event, for `tail`."""
    extra = ""
    kind = event.get("type", "")
    if kind == "call.speaking":
        extra = f" bot: {event.get('text', '')}"
    elif kind == "call.speech":
        final = "" if event.get("isFinal", True) else " (partial)"
        extra = f" user: {event.get('transcript', '')}{final}"
    elif kind == "call.dtmf":
        extra = f" digits={event.get('digits', '')}"
    elif kind == "call.machine":
        beep = event.get("beepDetected")
        extra = f" result={event.get('result', '')}" + ("" if beep is None else f" beep={beep}")
    elif kind == "call.tool":
        arguments = json.dumps(
            event.get("arguments", {}), ensure_ascii=False, separators=(",", ":")
        )
        extra = f" {event.get('name', '')}({arguments}) toolCallId={event.get('toolCallId', '')}"
    elif kind == "call.ended":
        extra = f" reason={event.get('reason', '')}"
    elif kind == "call.error":
        extra = f" error={event.get('error', '')}"
    return f"{event.get('timestamp', '')}  {event.get('callId', '')}  {kind}{extra}"
