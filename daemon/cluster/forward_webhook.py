"""A webhook about a call another daemon runs is handled by that daemon (SPEC section 16).

Behind a load balancer a provider's webhook may land on any daemon. The one it lands on checks it as
usual (limits, signature over `public_url`), then finds the call it is about (our `callId` in the
query, Telnyx's `client_state`, else the provider's call id) and, when another living daemon runs
that call, sends the request as it came (method, target, headers, body) over the cluster bus. The
owner replays it against its own webhook port on loopback, so it passes the very same checks and
handlers (and the shared replay cache) as if it had landed there, and the owner's answer (TwiML,
XML, JSON) goes back to the provider unchanged. A webhook for a new call, or for one this daemon
runs, is handled here; so is one about a call whose daemon is dead by the heartbeat rule, which this
daemon takes over first (:mod:`daemon.cluster.routing`: a provider such as Twilio does not retry
most status callbacks, so a 503 could lose a hang-up). A request this daemon replays for another
carries `X-Voicecall-Forwarded-By` with a random pass known only to this process, and is handled
where it arrives, so nothing is forwarded twice; the header from anyone else means nothing (it
cannot make a daemon skip forwarding and answer a delivery meant for the call's owner).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import aiohttp

from daemon.errors import VoicecallError
from daemon.model.webhook import WebhookReply
from daemon.providers.base import WebhookRequest

if TYPE_CHECKING:
    from daemon.cluster.wiring import Cluster

FORWARDED_HEADER = "X-Voicecall-Forwarded-By"
"""Set on a request replayed for another daemon (it is then handled where it arrives)."""

DEADLINE_SECONDS = 10.0
"""How long the daemon the webhook landed on waits for the owner's answer (providers wait
about 15 s)."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "host",
    }
)


def call_ref(webhook: WebhookRequest) -> str | None:
    """Which call a webhook is about: our callId (query or Telnyx client_state), else the
    provider's call id (Twilio CallSid, Plivo CallUUID, Telnyx call_control_id)."""
    ours = (webhook.query_value("callId") or "").strip()
    if ours:
        return ours
    content_type = (webhook.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        form = parse_qs(webhook.body.decode("utf-8", "replace"))
        for key in ("CallSid", "CallUUID"):
            if form.get(key):
                return form[key][0].strip() or None
        return None
    if content_type != "application/json":
        return None
    try:
        data = json.loads(webhook.body).get("data", {})
        payload = data.get("payload", {}) if isinstance(data, dict) else {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(payload, dict):
        return None
    state = payload.get("client_state")
    if isinstance(state, str) and state:
        try:
            ours = base64.b64decode(state, validate=True).decode("utf-8").split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            ours = ""
        if ours:
            return ours
    control = payload.get("call_control_id")
    return control if isinstance(control, str) and control else None


class ForwardPass:
    """The random value this daemon puts on the requests it replays for other daemons."""

    def __init__(self) -> None:
        self.value = secrets.token_urlsafe(24)

    def matches(self, given: str | None) -> bool:
        """True for a request this process replayed itself (constant-time comparison)."""
        return given is not None and hmac.compare_digest(given.encode(), self.value.encode())


def forwarder(
    cluster: Callable[[], Cluster | None], runs: Callable[[str], bool], own_pass: ForwardPass
) -> Callable[[str, WebhookRequest], Awaitable[WebhookReply | None]]:
    """The webhook server's `forward` hook."""

    async def forward(target: str, webhook: WebhookRequest) -> WebhookReply | None:
        group = cluster()
        if group is None or own_pass.matches(webhook.headers.get(FORWARDED_HEADER)):
            return None
        ref = call_ref(webhook)
        if ref is None or runs(ref):
            return None
        try:
            message = {
                "method": webhook.method,
                "target": target,
                "headers": [
                    [k, v]
                    for k, v in webhook.headers.items()
                    if k.lower() not in _HOP_BY_HOP and k.lower() != FORWARDED_HEADER.lower()
                ],
                "host": webhook.headers.get("Host", ""),
                "body": base64.b64encode(webhook.body).decode("ascii"),
            }
            answered = await group.ask_owner(ref, "webhook", message, DEADLINE_SECONDS)
        except VoicecallError as exc:  # its daemon, alive, did not answer: the provider retries
            return WebhookReply(503, "text/plain; charset=utf-8", exc.message.encode())
        if answered is None:  # nobody else runs the call (a dead owner's is taken over now)
            return None
        answer = answered.value
        return WebhookReply(
            int(answer["status"]), str(answer["contentType"]), base64.b64decode(str(answer["body"]))
        )

    return forward


def serve_forwarded(
    origin: Callable[[], str],
    http: Callable[[], aiohttp.ClientSession | None],
    own_pass: ForwardPass,
) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """The bus handler of `webhook` requests: replay one against this daemon's own port."""

    async def run(body: dict[str, Any]) -> Any:
        session = http()
        if session is None:
            raise VoicecallError("this daemon is not serving webhooks yet")
        headers = [(str(k), str(v)) for k, v in body.get("headers") or []]
        if body.get("host"):
            headers.append(("Host", str(body["host"])))
        headers.append((FORWARDED_HEADER, own_pass.value))
        async with session.request(
            str(body["method"]),
            origin() + str(body["target"]),
            data=base64.b64decode(str(body.get("body") or "")),
            headers=headers,
            allow_redirects=False,
            skip_auto_headers=("Content-Type",),
            timeout=aiohttp.ClientTimeout(total=DEADLINE_SECONDS),
        ) as response:
            reply = await response.read()
            return {
                "status": response.status,
                "contentType": response.headers.get("Content-Type", "text/plain"),
                "body": base64.b64encode(reply).decode("ascii"),
            }

    return run
