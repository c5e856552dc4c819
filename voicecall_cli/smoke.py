"""The steps behind `voicecall smoke`: the whole path a real call takes, one line per step.

Before any call: the config (every problem), that the provider is a real one, its secrets,
its REST API with those credentials (the same probes as `doctor`), the daemon (started if
needed) running that provider, and the webhook URL answering from this machine the way our
daemon does (an unsigned request refused with 401). Then, only when the user confirmed with
`--yes`: a real call is placed, and the signed status callbacks must arrive, pass signature
verification (the engine records a provider event only after that) and carry the call to its
end. The first failing step ends the run with its fix; nothing after it runs.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from daemon.config.exposure import is_local_api, provider_api_base_url
from daemon.config.loader import load_config
from daemon.config.model import Config
from daemon.errors import ConfigError
from daemon.paths import Paths
from daemon.providers.catalog import REAL_PROVIDERS
from daemon.rpc.protocol import RpcRemoteError
from voicecall_cli.doctor_checks import Check, check_secrets

PROBE_TIMEOUT_SECONDS = 10.0
ANSWERED_EVENTS = ("call.answered", "call.active", "call.speaking")
CONNECTED_ENDS = ("hangup-bot", "hangup-user", "completed")
SMOKE_MESSAGE = "This is a voicecall smoke test. Everything works. Goodbye."

Emit = Callable[[Check], None]
"""Prints one step as soon as it is known."""


class StepFailed(Exception):
    """A step failed; its Check (with the fix) has been emitted."""


@dataclass(slots=True)
class SmokeRun:
    """One `voicecall smoke`: what it checks and what it found."""

    paths: Paths
    to: str
    mode: str
    emit: Emit
    checks: list[Check] = field(default_factory=list)
    call_id: str | None = None
    config: Config | None = None

    def step(self, check: Check) -> Check:
        """Record and print one step; a FAIL stops the run."""
        self.checks.append(check)
        self.emit(check)
        if check.status == "FAIL":
            raise StepFailed(check.message)
        return check

    def fail(self, step_id: str, message: str, fix: str | None) -> NoReturn:
        """Record and print a failed step, which ends the run."""
        self.step(Check(step_id, "FAIL", message, fix))
        raise StepFailed(message)  # not reached: step() raised

    # ------------------------------------------------------------------ before any call

    def check_setup(self) -> Config:
        """Config, provider, secrets and the provider's API; the config in force."""
        try:
            config = load_config(self.paths)
        except ConfigError as exc:
            problems = [p for p in exc.problems if p != exc.message] or [exc.message]
            self.fail(
                "config",
                f"{exc.message}: " + "; ".join(problems),
                "`voicecall config validate` lists them; fix each, then run smoke again",
            )
        self.config = config
        self.step(Check("config", "OK", f"{config.source or 'defaults'} is valid"))
        if config.provider not in REAL_PROVIDERS:
            self.fail(
                "provider",
                f"provider = {config.provider!r}: smoke checks a real "
                "provider's setup (the mock needs none)",
                "`voicecall config set provider twilio` (or telnyx, plivo), then its credentials",
            )
        self.step(Check("provider", "OK", f"{config.provider}, calling from {config.from_number}"))
        for check in check_secrets(config):
            if check.status == "FAIL":
                self.fail("secrets", f"{check.id}: {check.message}", check.fix)
        self.step(Check("secrets", "OK", "every secret the provider needs is set"))
        from voicecall_cli.doctor_api import check_provider_api

        api = check_provider_api(config, offline=False)
        self.step(Check("provider.api", api.status, api.message, api.fix))
        return config

    def check_daemon(self, status: dict[str, Any]) -> str:
        """The running daemon serves this provider; its webhook URL."""
        assert self.config is not None
        if status.get("provider") != self.config.provider:
            self.fail(
                "daemon",
                f"the running daemon (pid {status.get('pid')}) uses provider "
                f"{status.get('provider')}, the config says {self.config.provider}",
                "`voicecall daemon restart`",
            )
        url = str(status.get("publicUrl") or status.get("webhookUrl") or "")
        self.step(Check("daemon", "OK", f"running (pid {status.get('pid')}), webhook {url}"))
        return url

    def check_webhook(self, url: str) -> None:
        """The webhook URL reaches our daemon: an unsigned POST must be refused with 401."""
        assert self.config is not None
        provider = self.config.provider
        api = provider_api_base_url(self.config) or ""
        local_api = is_local_api(api)
        request = urllib.request.Request(  # noqa: S310 - our own webhook URL, http(s) only
            url,
            data=b"voicecall=smoke",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            self.fail(
                "webhook",
                f"{url} cannot be reached from this machine ({reason})",
                "check public_url / the tunnel (`voicecall doctor` shows the exposure) "
                "and that the daemon runs",
            )
        if status != 401:
            self.fail(
                "webhook",
                f"{url} answered HTTP {status} to an unsigned request, where "
                "our daemon answers 401: something else serves this URL, or the path "
                "differs",
                "make public_url end with serve.path and point the proxy/tunnel at this daemon",
            )
        where = (
            f"the {provider} API is on this machine (a simulator), so it reaches it too"
            if local_api
            else f"reached from this machine through its public address, as {provider} will"
        )
        self.step(Check("webhook", "OK", f"{url} refuses unsigned requests (401): {where}"))

    # ------------------------------------------------------------------ the real call

    def place_call(
        self, events: Any, initiate: Callable[[dict[str, Any]], Any], deadline: float
    ) -> None:
        """Place the call and follow its events until it ends or `deadline` passes.

        `events` is a connection already subscribed to `voicecall.tail`, so that no event of
        the new call can slip by between the dial and the subscription.
        """
        assert self.config is not None
        params = {"to": self.to, "mode": self.mode, "message": SMOKE_MESSAGE}
        try:
            result = initiate(params)
        except RpcRemoteError as exc:
            self.fail(
                "call",
                f"{self.config.provider} refused the call: {exc.message}",
                "check the number, from_number and the account in the provider's console",
            )
        self.call_id = str(result["callId"])
        self.step(Check("call", "OK", f"placed call {self.call_id} to {self.to} ({self.mode})"))
        self._follow(events, deadline)

    def _follow(self, events: Any, deadline: float) -> None:
        assert self.config is not None
        seen: list[str] = []
        answered = False
        stream = events.notifications()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(seen, answered)
            events.settimeout(remaining)
            try:
                message = next(stream)
            except TimeoutError:
                self._timed_out(seen, answered)
            except StopIteration:
                self.fail(
                    "end",
                    "the daemon closed the event stream before the call ended",
                    "see `voicecall daemon logs`",
                )
            event = (message.get("params") or {}).get("event") or {}
            if event.get("callId") != self.call_id:
                continue
            kind = str(event.get("type"))
            seen.append(kind.removeprefix("call."))
            if kind in ANSWERED_EVENTS and not answered:
                answered = True
                self.step(
                    Check(
                        "callbacks",
                        "OK",
                        "signed status callbacks arrived and verified: " + ", ".join(seen),
                    )
                )
                if self.mode == "conversation":
                    self._converse(deadline)
            elif kind == "call.ended":
                reason = str(event.get("reason"))
                if not answered:
                    self.fail(
                        "callbacks",
                        f"the call ended {reason} before it was answered "
                        "(events: " + ", ".join(seen) + ")",
                        "answer the phone when it rings; check the number",
                    )
                if reason not in CONNECTED_ENDS:
                    self.fail(
                        "end",
                        f"the call ended {reason}",
                        f"see `voicecall calls show {self.call_id}` and `voicecall daemon logs`",
                    )
                self.step(
                    Check(
                        "end",
                        "OK",
                        f"the call ended ({reason}); its record: "
                        f"`voicecall calls show {self.call_id}`",
                    )
                )
                return

    def _converse(self, deadline: float) -> None:
        """Conversation mode: one turn, then hang up ourselves."""
        from daemon.rpc.client import RpcClient

        assert self.call_id is not None
        wait_ms = int(max(1.0, min(20.0, deadline - time.monotonic() - 10)) * 1000)
        with RpcClient(self.paths.socket, timeout=wait_ms / 1000 + 15) as turn:
            try:
                reply = turn.call(
                    "voicecall.continue",
                    {
                        "callId": self.call_id,
                        "timeoutMs": wait_ms,
                        "message": "Please say something after the tone.",
                    },
                )
                self.step(Check("speech", "OK", f"heard the callee: {reply['transcript']!r}"))
            except RpcRemoteError as exc:
                self.step(
                    Check(
                        "speech",
                        "WARN",
                        f"no reply heard: {exc.message}",
                        "check [streaming] (speech to text) if you spoke",
                    )
                )
            try:
                turn.call("voicecall.end", {"callId": self.call_id})
            except RpcRemoteError:
                pass

    def _timed_out(self, seen: list[str], answered: bool) -> NoReturn:
        assert self.config is not None
        if not answered:
            got = ", ".join(seen) or "none"
            self.fail(
                "callbacks",
                f"no answered status callback from {self.config.provider} "
                f"in time (events so far: {got})",
                "if it rang, the callbacks did not pass: check that public_url is exactly "
                "what the provider calls (signatures cover the URL) and "
                "`voicecall daemon logs` for rejected webhooks",
            )
        self.fail(
            "end",
            "the call did not end in time",
            f"`voicecall end --call-id {self.call_id}`; see `voicecall daemon logs`",
        )
