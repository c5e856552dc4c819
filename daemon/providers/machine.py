"""Answering-machine detection on the wire, for every provider (SPEC 13). Pure.

What each vendor is asked at dial time and how its answer maps to a :class:`MachineReport`:
- Twilio: `MachineDetection` (`DetectMessageEnd` in `detect-beep` mode, else `Enable`),
  `AsyncAmd=true`, `AsyncAmdStatusCallback` (our webhook, `type=amd`) and
  `MachineDetectionTimeout`; the callback carries `AnsweredBy`: `human`, `machine_start`,
  `machine_end_beep` / `machine_end_silence` / `machine_end_other` (the greeting has ended),
  `fax`, `unknown`;
- Telnyx: `answering_machine_detection` on dial (`greeting_end` in `detect-beep` mode: Telnyx
  then reports the end of a machine's greeting on a beep *or* on silence; `detect` otherwise)
  with `total_analysis_time_millis`; `call.machine.detection.ended` (`human`, `machine`,
  `not_sure`), `call.machine.premium.detection.ended` (`human_residence`, `human_business`,
  `machine`, `silence`, `fax_detected`, `not_sure`), `call.machine.greeting.ended`
  (`beep_detected`, `ended`, `not_sure`) and `call.machine.premium.greeting.ended`
  (`beep_detected`, `no_beep_detected`, `prompt_ended`);
- Plivo: `machine_detection=true` with `machine_detection_time` (ms, Plivo allows 2000-10000)
  and `machine_detection_url` (our webhook, `flow=machine`); the callback's `Machine` is
  `true` (a machine) or `false` (a person). Plivo never says when a greeting ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.model.events import MachineReport, MachineResult
from daemon.providers.catalog import spec

if TYPE_CHECKING:
    from daemon.config.model import MachineDetectionConfig

# ---------------------------------------------------------------------------------- Twilio

TWILIO_RESULTS: Mapping[str, MachineResult] = {
    "human": MachineResult.HUMAN,
    "machine_start": MachineResult.MACHINE,
    "machine_end_beep": MachineResult.MACHINE,
    "machine_end_silence": MachineResult.MACHINE,
    "machine_end_other": MachineResult.MACHINE,
    "fax": MachineResult.FAX,
    "unknown": MachineResult.UNKNOWN,
}


def twilio_dial_params(settings: MachineDetectionConfig, callback: str) -> dict[str, Any]:
    """The `Calls.create` keyword arguments (twilio SDK names) that ask for async AMD."""
    return {
        "machine_detection": "DetectMessageEnd" if settings.mode == "detect-beep" else "Enable",
        "machine_detection_timeout": settings.timeout_seconds,
        "async_amd": "true",
        "async_amd_status_callback": callback,
        "async_amd_status_callback_method": "POST",
    }


def twilio_report(answered_by: str) -> MachineReport | None:
    """The report of an `AnsweredBy` value; None when there is none."""
    raw = answered_by.strip()
    if not raw:
        return None
    result = TWILIO_RESULTS.get(raw.lower(), MachineResult.UNKNOWN)
    ended = raw.lower().startswith("machine_end_")
    beep = (raw.lower() == "machine_end_beep") if ended else None
    return MachineReport(result, raw, beep_detected=beep, greeting_ended=ended)


# ---------------------------------------------------------------------------------- Telnyx

TELNYX_RESULTS: Mapping[str, MachineResult] = {
    "human": MachineResult.HUMAN,
    "human_residence": MachineResult.HUMAN,
    "human_business": MachineResult.HUMAN,
    "machine": MachineResult.MACHINE,
    "fax_detected": MachineResult.FAX,
    "not_sure": MachineResult.UNKNOWN,
    "silence": MachineResult.UNKNOWN,
}
TELNYX_VERDICTS = frozenset(
    {"call.machine.detection.ended", "call.machine.premium.detection.ended"}
)
TELNYX_GREETINGS = frozenset({"call.machine.greeting.ended", "call.machine.premium.greeting.ended"})


def telnyx_dial_fields(settings: MachineDetectionConfig) -> dict[str, Any]:
    """The `POST /calls` fields that ask for answering-machine detection."""
    return {
        "answering_machine_detection": (
            "greeting_end" if settings.mode == "detect-beep" else "detect"
        ),
        "answering_machine_detection_config": {
            "total_analysis_time_millis": settings.timeout_seconds * 1000
        },
    }


def telnyx_report(event_type: str, payload: Mapping[str, Any]) -> MachineReport | None:
    """The report of a `call.machine.*` webhook; None for any other event."""
    value = payload.get("result")
    raw = value if isinstance(value, str) else ""
    if event_type in TELNYX_VERDICTS:
        return MachineReport(TELNYX_RESULTS.get(raw, MachineResult.UNKNOWN), raw)
    if event_type in TELNYX_GREETINGS:
        beep = {"beep_detected": True, "no_beep_detected": False, "ended": False}.get(raw)
        # Only a machine has a greeting; `prompt_ended` (iOS call screening) is not one.
        if raw == "prompt_ended":
            return None
        return MachineReport(
            MachineResult.MACHINE, raw, beep_detected=beep, greeting_ended=True, verdict=False
        )
    return None


# ---------------------------------------------------------------------------------- Plivo


def plivo_dial_params(settings: MachineDetectionConfig, callback: str) -> dict[str, Any]:
    """The `POST /Call/` fields that ask for asynchronous machine detection."""
    return {
        "machine_detection": "true",
        "machine_detection_time": round(decision_seconds("plivo", settings) * 1000),
        "machine_detection_url": callback,
        "machine_detection_method": "POST",
    }


def decision_seconds(provider: str, settings: MachineDetectionConfig) -> float:
    """The longest a provider may take to decide (the engine adds a grace for delivery): the
    configured time, clamped to the range its declaration gives (Plivo: 2-10 s)."""
    declared = spec(provider)
    seconds = float(settings.timeout_seconds)
    bounds = declared.machine_detection_seconds if declared is not None else None
    if bounds is None:
        return seconds
    low, high = bounds
    return min(high, max(low, seconds))


def plivo_report(machine: str | None) -> MachineReport | None:
    """The report of a machine-detection callback's `Machine` value; None without one."""
    raw = (machine or "").strip().lower()
    if raw not in ("true", "false"):
        return None
    result = MachineResult.MACHINE if raw == "true" else MachineResult.HUMAN
    return MachineReport(result, f"Machine={raw}")
