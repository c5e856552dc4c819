"""The webhook server's answer, shared by providers (who render it) and stores (which replay it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WebhookReply:
    """What the webhook server answers."""

    status: int = 200
    content_type: str = "text/plain"
    body: bytes = b"OK"
