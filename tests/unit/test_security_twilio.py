"""Twilio signatures, checked against twilio.request_validator.RequestValidator as the oracle."""

from __future__ import annotations

import hashlib
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, MultiDict
from twilio.request_validator import RequestValidator

from daemon.errors import WebhookSignatureError
from daemon.providers.base import WebhookRequest
from daemon.webhooks.security import TwilioVerifier, has_signature_headers

TOKEN = "12345678901234567890123456789012"
URL = "https://example.ngrok.app/voice/webhook?callId=abc&type=status"
PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
    ("ForwardedFrom", ""),
]

oracle = RequestValidator(TOKEN)
ours = TwilioVerifier(TOKEN)


def sign(url: str, params: list[tuple[str, str]]) -> str:
    """Mint a header with the SDK (MultiDict so repeated names keep every value)."""
    return oracle.compute_signature(url, MultiDict(params))


def request(url: str, body: bytes, signature: str | None) -> WebhookRequest:
    headers = CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"})
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    query = tuple(
        (k, v) for k, _, v in (p.partition("=") for p in url.partition("?")[2].split("&") if p)
    )
    return WebhookRequest(
        method="POST",
        path="/voice/webhook",
        query=query,
        headers=headers,
        body=body,
        remote="203.0.113.5",
        verify_url=url,
    )


def test_compute_matches_sdk() -> None:
    """Our signature string equals the SDK's for the same URL and params."""
    assert ours.compute_signature(URL, PARAMS) == sign(URL, PARAMS)


def test_valid_form_request_verifies() -> None:
    """A form webhook signed by the SDK verifies and yields a twilio replay key."""
    key = ours.verify_request(request(URL, urlencode(PARAMS).encode(), sign(URL, PARAMS)))
    assert key.startswith("twilio:req:")


@pytest.mark.parametrize(
    ("mutate", "what"),
    [
        (lambda u, b: (u, b.replace(b"1234", b"9999")), "tampered param"),
        (lambda u, b: (u, b + b"&Extra=1"), "added param"),
        (lambda u, b: (u.replace("status", "answer"), b), "tampered query"),
        (lambda u, b: (u.replace("example", "evil"), b), "other host"),
        (lambda u, b: (u.replace("https", "http"), b), "other scheme"),
    ],
)
def test_tampering_fails(mutate, what: str) -> None:
    """Any change to URL or params after signing is refused."""
    url, body = mutate(URL, urlencode(PARAMS).encode())
    with pytest.raises(WebhookSignatureError):
        ours.verify_request(request(url, body, sign(URL, PARAMS)))


def test_wrong_token_fails_and_message_hides_secrets() -> None:
    """Another account's token fails; the error names neither token nor signatures."""
    signature = RequestValidator("another-token").compute_signature(URL, dict(PARAMS))
    with pytest.raises(WebhookSignatureError) as info:
        ours.verify_form(URL, PARAMS, signature)
    text = str(info.value)
    assert TOKEN not in text and signature not in text
    assert sign(URL, PARAMS) not in text


def test_missing_signature_and_missing_token_fail_closed() -> None:
    """No header, or no configured token, never verifies."""
    with pytest.raises(WebhookSignatureError):
        ours.verify_form(URL, PARAMS, None)
    with pytest.raises(WebhookSignatureError):
        TwilioVerifier("").verify_form(URL, PARAMS, sign(URL, PARAMS))


@pytest.mark.parametrize(
    ("signed_url", "received_url"),
    [
        ("https://example.com:443/voice/webhook", "https://example.com/voice/webhook"),
        ("https://example.com/voice/webhook", "https://example.com:443/voice/webhook"),
        ("http://example.com:80/voice/webhook?x=1", "http://example.com/voice/webhook?x=1"),
        ("http://example.com/voice/webhook", "http://example.com:80/voice/webhook"),
        ("https://example.com/voice/webhook", "https://example.com:8443/voice/webhook"),
    ],
)
def test_default_port_variants_accepted(signed_url: str, received_url: str) -> None:
    """Like the SDK, a signature over the URL with or without its port is accepted."""
    signature = sign(signed_url, PARAMS)
    assert oracle.validate(received_url, MultiDict(PARAMS), signature)
    assert ours.verify_form(received_url, PARAMS, signature)


def test_wrong_port_refused() -> None:
    """A different explicit port is a different URL."""
    signature = sign("https://example.com:8443/voice/webhook", PARAMS)
    with pytest.raises(WebhookSignatureError):
        ours.verify_form("https://example.com:9443/voice/webhook", PARAMS, signature)


def test_repeated_params_match_sdk() -> None:
    """Repeated names sign every distinct value sorted; duplicates collapse like the SDK's set."""
    params = [
        ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "answered"),
        ("A", "2"),
        ("A", "1"),
        ("A", "2"),
    ]
    signature = sign(URL, params)
    assert ours.compute_signature(URL, params) == signature
    assert oracle.validate(URL, MultiDict(params), signature)
    ours.verify_form(URL, list(reversed(params)), signature)


def test_json_body_sha256_variant() -> None:
    """JSON bodies: the URL carries bodySHA256 and the signature covers the URL alone."""
    body = b'{"CallSid": "CA1", "CallStatus": "completed"}'
    url = "https://example.com/voice/webhook?bodySHA256=" + hashlib.sha256(body).hexdigest()
    signature = oracle.compute_signature(url, {})
    assert oracle.validate(url, body.decode(), signature)
    key = ours.verify_request(request(url, body, signature))
    assert key.startswith("twilio:req:")
    with pytest.raises(WebhookSignatureError):
        ours.verify_request(request(url, body.replace(b"completed", b"failed"), signature))


def test_replay_key_is_stable_for_equivalent_deliveries() -> None:
    """Param order does not change the key; a different URL or signature does."""
    signature = sign(URL, PARAMS)
    first = ours.verify_form(URL, PARAMS, signature)
    again = ours.verify_form(URL, list(reversed(PARAMS)), signature)
    assert first == again
    other = [*PARAMS, ("Extra", "1")]
    assert ours.verify_form(URL, other, sign(URL, other)) != first


def test_websocket_upgrade_signs_the_wss_url() -> None:
    """Media-stream upgrades are signed over the wss:// URL with no params."""
    wss = "wss://example.com/voice/stream"
    headers = CIMultiDict({"X-Twilio-Signature": oracle.compute_signature(wss, {})})
    assert ours.verify_upgrade(wss, headers).startswith("twilio:req:")
    with pytest.raises(WebhookSignatureError):
        ours.verify_upgrade("https://example.com/voice/stream", headers)


def test_header_gate() -> None:
    """The pre-body gate only needs X-Twilio-Signature, any case."""
    assert has_signature_headers("twilio", CIMultiDict({"x-twilio-signature": "abc"}))
    assert not has_signature_headers("twilio", CIMultiDict({"x-twilio-signature": ""}))
    assert not has_signature_headers("twilio", CIMultiDict())


_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
)
_hosts = st.sampled_from(["example.com", "a.b.example.org", "127.0.0.1", "[::1]"])
_ports = st.sampled_from(["", ":443", ":80", ":8080"])
_paths = st.lists(st.text(alphabet="abcXYZ09-_.~", min_size=1, max_size=8), max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_hosts,
    port=_ports,
    segments=_paths,
    query=st.lists(st.tuples(_text, _text), max_size=3),
    params=st.lists(st.tuples(_text, _text), max_size=8),
)
def test_hypothesis_round_trip_against_sdk(scheme, host, port, segments, query, params) -> None:
    """Random URLs and params: our compute equals the SDK's, and both validators agree."""
    url = f"{scheme}://{host}{port}/" + "/".join(segments)
    if query:
        url += "?" + urlencode(query, quote_via=quote)
    signature = sign(url, params)
    assert ours.compute_signature(url, params) == signature
    assert oracle.validate(url, MultiDict(params), signature)
    ours.verify_form(url, params, signature)
    assert ours.verify_request(request(url, urlencode(params).encode(), signature))
    bad = signature[:-2] + ("A=" if signature[-2:] != "A=" else "B=")
    assert not oracle.validate(url, MultiDict(params), bad)
    with pytest.raises(WebhookSignatureError):
        ours.verify_form(url, params, bad)
