"""Plivo V3 and V2 signatures, checked against plivo.utils as the oracle."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import (
    construct_get_url,
    construct_post_url,
    get_signature_v3,
    validate_v3_signature,
)

from daemon.errors import WebhookSignatureError
from daemon.providers.base import WebhookRequest
from daemon.webhooks.security import (
    PlivoVerifier,
    has_signature_headers,
    plivo_v3_base,
)

TOKEN = "ZDQ2ZjNkYjQ1ZTEwYzM0N2YxYmI2ZmIxYjQzNDM4"
URL = "https://example.com/voice/webhook?callId=abc&type=status"
NONCE = "05429567804466091622"
PARAMS = {"CallUUID": "c1d2", "CallStatus": "in-progress", "From": "14155551234", "Empty": ""}

ours = PlivoVerifier(TOKEN)
ours_v2 = PlivoVerifier(TOKEN, accept_v2=True)


def sdk_v3(method: str, url: str, params: Mapping[str, object], nonce: str = NONCE) -> str:
    """The SDK's V3 signature for a request (the same code its validator runs)."""
    build = construct_get_url if method == "GET" else construct_post_url
    base = build(url, dict(params)).decode()
    return get_signature_v3(TOKEN.encode(), base, nonce.encode()).decode()


def pairs(params: Mapping[str, object]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in params.items():
        for v in value if isinstance(value, list) else [value]:
            out.append((name, str(v)))
    return out


def test_v3_base_string_matches_sdk() -> None:
    """The signed base string is byte for byte the SDK's, GET and POST."""
    params = {"z": "1", "a": ["2", "1"], "e": ""}
    url = "https://a.b/p?x=%41&b=2&b=1&e="
    assert (
        plivo_v3_base("POST", url, pairs(params)) == construct_post_url(url, dict(params)).decode()
    )
    assert plivo_v3_base("GET", url, pairs(params)) == construct_get_url(url, dict(params)).decode()
    assert plivo_v3_base("POST", "https://a.b/p", []) == "https://a.b/p"
    assert plivo_v3_base("POST", "https://a.b/p", [("a", "b")]) == "https://a.b/p?ab"


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_valid_v3_verifies(method: str) -> None:
    """A request signed like Plivo verifies with both the SDK and us."""
    params = PARAMS if method == "POST" else {}
    signature = sdk_v3(method, URL, params)
    assert validate_v3_signature(method, URL, NONCE, TOKEN, signature, dict(params))
    key = ours.verify_v3(method, URL, pairs(params), signature, NONCE)
    assert key.startswith("plivo:v3:")
    assert ours.compute_v3(method, URL, pairs(params), NONCE) == signature


def test_several_comma_separated_signatures() -> None:
    """The header may carry several signatures; any match wins (SDK: membership)."""
    good = sdk_v3("POST", URL, PARAMS)
    header = f"bm90LXRoaXMtb25l,{good},YWxzby1ub3Q="
    assert validate_v3_signature("POST", URL, NONCE, TOKEN, header, dict(PARAMS))
    assert ours.verify_v3("POST", URL, pairs(PARAMS), header, NONCE)
    assert ours.verify_v3("POST", URL, pairs(PARAMS), f"junk, {good}", NONCE)
    with pytest.raises(WebhookSignatureError):
        ours.verify_v3("POST", URL, pairs(PARAMS), "bm90LXRoaXMtb25l,YWxzby1ub3Q=", NONCE)


@pytest.mark.parametrize(
    ("url", "params", "nonce", "token"),
    [
        (URL, {**PARAMS, "CallStatus": "completed"}, NONCE, TOKEN),
        (URL.replace("status", "answer"), PARAMS, NONCE, TOKEN),
        ("https://evil.com/voice/webhook?callId=abc&type=status", PARAMS, NONCE, TOKEN),
        (URL, PARAMS, "1", TOKEN),
        (URL, PARAMS, NONCE, "another-token"),
    ],
    ids=["param", "query", "host", "nonce", "token"],
)
def test_v3_tampering_fails(url: str, params: Mapping[str, object], nonce: str, token: str) -> None:
    """Changing params, URL or nonce, or another account's token, fails, like the SDK."""
    signature = sdk_v3("POST", URL, PARAMS)
    assert not validate_v3_signature("POST", url, nonce, token, signature, dict(params))
    with pytest.raises(WebhookSignatureError) as info:
        PlivoVerifier(token).verify_v3("POST", url, pairs(params), signature, nonce)
    assert signature not in str(info.value) and token not in str(info.value)


def test_v2_matches_sdk_and_ignores_query() -> None:
    """V2 signs URL-without-query + nonce; query-only variants share the replay key."""
    from base64 import b64encode
    from hashlib import sha256
    from hmac import new

    signature = b64encode(
        new(TOKEN.encode(), b"https://example.com/voice/webhook" + NONCE.encode(), sha256).digest()
    ).decode()
    assert validate_signature(URL, NONCE, signature, TOKEN)
    assert ours.compute_v2(URL, NONCE) == signature
    first = ours_v2.verify_v2(URL, signature, NONCE)
    again = ours_v2.verify_v2("https://example.com/voice/webhook?other=1", signature, NONCE)
    assert first == again and first.startswith("plivo:v2:")
    with pytest.raises(WebhookSignatureError):
        ours_v2.verify_v2(URL, signature, "other-nonce")


def test_v2_is_refused_unless_accepted() -> None:
    """A V2 pair the SDK calls valid still fails by default: V2 does not sign the body."""
    signature = ours.compute_v2(URL, NONCE)
    assert validate_signature(URL, NONCE, signature, TOKEN)
    with pytest.raises(WebhookSignatureError, match="accept_v2_signatures"):
        ours.verify_v2(URL, signature, NONCE)
    v2 = {"X-Plivo-Signature-V2": signature, "X-Plivo-Signature-V2-Nonce": NONCE}
    with pytest.raises(WebhookSignatureError, match="V2 signature refused"):
        ours.verify_request(request(v2, b"CallUUID=forged"))


def test_v3_replay_key_ignores_query_order() -> None:
    """The same V3 delivery with its query reordered verifies (the SDK agrees) to one key."""
    reordered = "https://example.com/voice/webhook?type=status&callId=abc"
    signature = sdk_v3("POST", URL, PARAMS)
    assert validate_v3_signature("POST", reordered, NONCE, TOKEN, signature, dict(PARAMS))
    first = ours.verify_v3("POST", URL, pairs(PARAMS), signature, NONCE)
    again = ours.verify_v3("POST", reordered, pairs(PARAMS), signature, NONCE)
    assert first == again


def request(headers: dict[str, str], body: bytes = b"") -> WebhookRequest:
    return WebhookRequest(
        "POST",
        "/voice/webhook",
        (("callId", "abc"), ("type", "status")),
        CIMultiDict(headers),
        body,
        "1.2.3.4",
        URL,
    )


def test_verify_request_prefers_v3_then_v2() -> None:
    """V3 when its pair is present, else V2, else a missing-headers failure."""
    body = urlencode(PARAMS).encode()
    v3 = {"X-Plivo-Signature-V3": sdk_v3("POST", URL, PARAMS), "X-Plivo-Signature-V3-Nonce": NONCE}
    assert ours.verify_request(request(v3, body)).startswith("plivo:v3:")
    v2 = {"X-Plivo-Signature-V2": ours.compute_v2(URL, NONCE), "X-Plivo-Signature-V2-Nonce": NONCE}
    assert ours_v2.verify_request(request(v2, body)).startswith("plivo:v2:")
    with pytest.raises(WebhookSignatureError, match="V3"):
        ours_v2.verify_request(request({**v3, **v2}, b"CallUUID=forged"))
    with pytest.raises(WebhookSignatureError, match="missing"):
        ours.verify_request(request({"X-Plivo-Signature-V3": "x"}, body))


def test_replay_key_is_url_and_nonce() -> None:
    """Equivalent deliveries (same URL and nonce) share a key; another nonce does not."""
    a = ours.verify_v3("POST", URL, pairs(PARAMS), sdk_v3("POST", URL, PARAMS), NONCE)
    b = ours.verify_v3("POST", URL, pairs(PARAMS), sdk_v3("POST", URL, PARAMS) + ",x", NONCE)
    c = ours.verify_v3("POST", URL, pairs(PARAMS), sdk_v3("POST", URL, PARAMS, "9"), "9")
    assert a == b != c


def test_missing_token_and_headers_fail_closed() -> None:
    """No token, no nonce, or an unsupported method never verify."""
    signature = sdk_v3("POST", URL, PARAMS)
    with pytest.raises(WebhookSignatureError):
        PlivoVerifier("").verify_v3("POST", URL, pairs(PARAMS), signature, NONCE)
    with pytest.raises(WebhookSignatureError):
        ours.verify_v3("POST", URL, pairs(PARAMS), signature, None)
    with pytest.raises(WebhookSignatureError):
        ours.verify_v3("PUT", URL, pairs(PARAMS), signature, NONCE)


def test_header_gate_needs_a_complete_pair() -> None:
    """A complete V3 or V2 pair passes the pre-body gate; half a pair does not."""
    gate = lambda h: has_signature_headers("plivo", CIMultiDict(h))  # noqa: E731
    assert gate({"x-plivo-signature-v3": "s", "x-plivo-signature-v3-nonce": "n"})
    assert gate({"x-plivo-signature-v2": "s", "x-plivo-signature-v2-nonce": "n"})
    assert not gate({"x-plivo-signature-v3": "s", "x-plivo-signature-v2-nonce": "n"})
    assert not gate({"x-plivo-signature-v3": "s"})
    assert not has_signature_headers("unknown", CIMultiDict({"x-plivo-signature-v3": "s"}))


_ascii = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=10)
_name = st.text(alphabet="abcdefgXYZ_0123", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST"]),
    host=st.sampled_from(["example.com", "example.com:8443", "127.0.0.1:3334"]),
    path=st.sampled_from(["/voice/webhook", "/", "/a/b"]),
    query=st.lists(st.tuples(_name, _ascii), max_size=3),
    params=st.dictionaries(
        _name, st.one_of(_ascii, st.lists(_ascii, min_size=1, max_size=3)), max_size=5
    ),
    nonce=st.text(alphabet="0123456789", min_size=1, max_size=20),
)
def test_hypothesis_agrees_with_sdk(method, host, path, query, params, nonce) -> None:
    """Random URLs, query strings, multi-valued params and nonces: same signature as the SDK."""
    url = f"https://{host}{path}"
    if query:
        url += "?" + urlencode(query, quote_via=quote)
    if method == "GET":
        params = {}
    signature = sdk_v3(method, url, params, nonce)
    assert validate_v3_signature(method, url, nonce, TOKEN, signature, dict(params))
    assert ours.compute_v3(method, url, pairs(params), nonce) == signature
    assert ours.verify_v3(method, url, pairs(params), signature, nonce)
