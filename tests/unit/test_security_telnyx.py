"""Telnyx Ed25519 signatures, checked against the telnyx SDK's own verification as the oracle."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from nacl.signing import SigningKey
from telnyx import Telnyx
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature
from telnyx.lib.webhooks_ed25519 import verify_ed25519

from daemon.errors import WebhookSignatureError
from daemon.providers.base import WebhookRequest
from daemon.webhooks.security import (
    TelnyxVerifier,
    has_signature_headers,
    parse_ed25519_public_key,
)

SIGNING = SigningKey(b"\x07" * 32)
RAW_KEY = bytes(SIGNING.verify_key)
PUBLIC_B64 = base64.b64encode(RAW_KEY).decode()
_crypto_key = Ed25519PublicKey.from_public_bytes(RAW_KEY)
DER_B64 = base64.b64encode(
    _crypto_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).decode()
PEM = _crypto_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
BODY = json.dumps(
    {"data": {"event_type": "call.answered", "id": "e1", "payload": {"call_control_id": "v3:x"}}}
).encode()
NOW = 1_700_000_000


def signed(body: bytes, timestamp: str, key: SigningKey = SIGNING) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + b"|" + body).signature).decode()


def verifier(key: str | None = PUBLIC_B64, now: float = NOW) -> TelnyxVerifier:
    return TelnyxVerifier(key, clock=lambda: now)


def test_valid_signature_agrees_with_sdk() -> None:
    """A fresh delivery passes both the SDK and us."""
    ts = str(int(time.time()))
    headers = {"telnyx-signature-ed25519": signed(BODY, ts), "telnyx-timestamp": ts}
    verify_webhook_signature(BODY, headers, PUBLIC_B64)
    client = Telnyx(api_key="KEY_dummy_no_network", public_key=PUBLIC_B64)
    verify_ed25519(client, BODY, headers)
    event = client.webhooks.unwrap(BODY.decode(), headers=headers)
    assert event is not None
    key = TelnyxVerifier(PUBLIC_B64).verify(BODY, headers["telnyx-signature-ed25519"], ts)
    assert key.startswith("telnyx:")


@pytest.mark.parametrize("key_text", [PUBLIC_B64, DER_B64, PEM], ids=["raw", "der", "pem"])
def test_three_key_formats(key_text: str) -> None:
    """Base64 raw 32 bytes, base64 DER SPKI and PEM all load the same key."""
    assert parse_ed25519_public_key(key_text) == RAW_KEY
    ts = str(NOW)
    assert verifier(key_text).verify(BODY, signed(BODY, ts), ts)


@pytest.mark.parametrize("bad_key", [None, "", "not base64!", base64.b64encode(b"x" * 31).decode()])
def test_missing_or_invalid_key_fails_closed(bad_key: str | None) -> None:
    """Without a usable key nothing verifies, and the message says what to configure."""
    ts = str(NOW)
    with pytest.raises(WebhookSignatureError, match=r"telnyx\.public_key"):
        verifier(bad_key).verify(BODY, signed(BODY, ts), ts)


def test_tampered_body_and_wrong_key_fail() -> None:
    """The raw bytes are signed: one changed byte or another key fails, like the SDK."""
    ts = str(NOW)
    sig = signed(BODY, ts)
    with pytest.raises(WebhookSignatureError):
        verifier().verify(BODY.replace(b"answered", b"hangup"), sig, ts)
    with pytest.raises(WebhookSignatureError):
        verifier().verify(BODY, signed(BODY, ts, SigningKey(b"\x09" * 32)), ts)
    with pytest.raises(WebhookSignatureError):
        verifier().verify(BODY, sig, str(NOW + 1))


def test_sdk_also_rejects_tampering() -> None:
    """The oracle agrees that a tampered body is invalid."""
    ts = str(int(time.time()))
    headers = {"telnyx-signature-ed25519": signed(BODY, ts), "telnyx-timestamp": ts}
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(BODY + b" ", headers, PUBLIC_B64)


@pytest.mark.parametrize("skew", [-301, 301, -10_000, 10_000])
def test_stale_and_future_timestamps_fail(skew: int) -> None:
    """|now - timestamp| over 300 s fails, in the past and in the future."""
    ts = str(NOW + skew)
    with pytest.raises(WebhookSignatureError, match="window"):
        verifier().verify(BODY, signed(BODY, ts), ts)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamps_inside_window_pass(skew: int) -> None:
    """The window is inclusive at 300 s."""
    ts = str(NOW + skew)
    assert verifier().verify(BODY, signed(BODY, ts), ts)


@pytest.mark.parametrize("ts", ["abc", "-5", "1.5", "17e8"])
def test_non_integer_timestamp_fails(ts: str) -> None:
    """The timestamp must be unix seconds."""
    with pytest.raises(WebhookSignatureError):
        verifier().verify(BODY, signed(BODY, ts), ts)


def test_base64url_and_unpadded_signatures_share_the_replay_key() -> None:
    """base64url and missing padding are accepted and map to the same replay key."""
    ts = str(NOW)
    raw = SIGNING.sign(ts.encode() + b"|" + BODY).signature
    standard = base64.b64encode(raw).decode()
    url_form = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert verifier().verify(BODY, standard, ts) == verifier().verify(BODY, url_form, ts)


def test_signature_must_be_64_bytes_of_base64() -> None:
    """Garbage or short signatures fail without reaching the crypto."""
    ts = str(NOW)
    for sig in ["%%%", base64.b64encode(b"x" * 63).decode(), ""]:
        with pytest.raises(WebhookSignatureError):
            verifier().verify(BODY, sig, ts)


def test_replay_key_differs_per_body_and_timestamp() -> None:
    """Different deliveries have different keys."""
    a = verifier().verify(BODY, signed(BODY, str(NOW)), str(NOW))
    b = verifier().verify(BODY, signed(BODY, str(NOW + 1)), str(NOW + 1))
    body2 = BODY + b" "
    c = verifier().verify(body2, signed(body2, str(NOW)), str(NOW))
    assert len({a, b, c}) == 3


def test_verify_request_reads_headers_case_insensitively() -> None:
    """The server-facing entry point takes the headers from the request."""
    ts = str(NOW)
    headers = CIMultiDict({"Telnyx-Signature-Ed25519": signed(BODY, ts), "Telnyx-Timestamp": ts})
    req = WebhookRequest("POST", "/w", (), headers, BODY, "1.2.3.4", "https://x/w")
    assert verifier().verify_request(req).startswith("telnyx:")


def test_header_gate_needs_both_headers() -> None:
    """Signature and timestamp must both be present before the body is read."""
    assert has_signature_headers(
        "telnyx", CIMultiDict({"telnyx-signature-ed25519": "s", "telnyx-timestamp": "1"})
    )
    assert not has_signature_headers("telnyx", CIMultiDict({"telnyx-signature-ed25519": "s"}))
    assert not has_signature_headers("telnyx", CIMultiDict({"telnyx-timestamp": "1"}))


@settings(max_examples=100, deadline=None)
@given(body=st.text(max_size=300).map(str.encode), seed=st.binary(min_size=32, max_size=32))
def test_hypothesis_agrees_with_sdk(body: bytes, seed: bytes) -> None:
    """Random bodies and keys: the SDK and we accept the same signed deliveries."""
    key = SigningKey(seed)
    public = base64.b64encode(bytes(key.verify_key)).decode()
    ts = str(int(time.time()))
    sig = signed(body, ts, key)
    verify_webhook_signature(
        body, {"telnyx-signature-ed25519": sig, "telnyx-timestamp": ts}, public
    )
    assert TelnyxVerifier(public).verify(body, sig, ts).startswith("telnyx:")
