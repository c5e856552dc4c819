"""Webhook signature schemes: Twilio, Telnyx and Plivo. Pure and synchronous.

This is the only module that reads signature headers. Each verifier checks one provider's scheme
against the URL the provider signed (see `daemon.webhooks.urls`) and, on success, returns the
request's *replay key*: a provider-prefixed hash of what identifies one delivery (SPEC 8.6), so the
webhook server can recognise a second delivery of the same request. Failures raise
`WebhookSignatureError` whose message names what failed but never the secret, the expected
signature or the signature received.

Secrets are turned into ready HMAC objects (or an Ed25519 verify key) once, at construction: the
hot path is then one `hmac.copy()` + update per request (SPEC 12 asks for >= 2000 webhooks/s).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlparse, urlsplit, urlunparse, urlunsplit

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from daemon.errors import WebhookSignatureError
from daemon.providers import catalog
from daemon.providers.base import WebhookRequest
from daemon.providers.catalog import (
    PLIVO_V2_NONCE_HEADER,
    PLIVO_V2_SIGNATURE_HEADER,
    PLIVO_V3_NONCE_HEADER,
    PLIVO_V3_SIGNATURE_HEADER,
    TELNYX_SIGNATURE_HEADER,
    TELNYX_TIMESTAMP_HEADER,
    TWILIO_SIGNATURE_HEADER,
)

TELNYX_TIMESTAMP_TOLERANCE_SECONDS = 300
"""Telnyx's own SDKs accept |now - timestamp| up to five minutes, past or future."""

ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
"""DER SubjectPublicKeyInfo header of every Ed25519 key; the 32 raw key bytes follow it."""

Params = Sequence[tuple[str, str]]
"""Form parameters in arrival order; a name may repeat."""

_TIMESTAMP = re.compile(r"\d{1,15}", re.ASCII)
_NETLOC_PORT = re.compile(r"^(\[[^\]]*\]|[^:\[\]]*)(?::(\d*))?$")
_DEFAULT_PORTS = {"https": "443", "wss": "443", "http": "80", "ws": "80"}


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, stripped; "" when absent (aiohttp's mapping is case-insensitive)."""
    return (headers.get(name) or "").strip()


def has_signature_headers(provider_name: str, headers: Mapping[str, str]) -> bool:
    """Whether a request carries the named provider's signature headers (the pre-body gate).

    Checked before the body is read, so a request that cannot possibly verify costs nothing.
    Unknown provider names answer False: the gate fails closed.

    Args:
        provider_name: a provider of :mod:`daemon.providers.catalog`.
        headers: the request headers (case-insensitive mapping).

    Returns:
        True when every header of one of the provider's declared sets
        (`ProviderSpec.signature_headers`) is present and non-empty.
    """
    declared = catalog.spec(provider_name)
    if declared is None:
        return False
    return any(
        all(_header(headers, name) for name in names) for names in declared.signature_headers
    )


def _sha256_hex(*parts: bytes) -> str:
    return hashlib.sha256(b"\n".join(parts)).hexdigest()


def skip_replay_key(provider_name: str, method: str, url: str, body: bytes) -> str:
    """The replay key used when signature verification is switched off (loopback development).

    Replays are still detected in skip mode, so a retried delivery never applies twice.
    """
    digest = _sha256_hex(method.upper().encode(), url.encode(), body)
    return f"{provider_name}:skip:{digest}"


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """Decode an `application/x-www-form-urlencoded` body, keeping blank values and repeats.

    Blank values matter: Twilio signs `Name` + "" for an empty parameter. The verifier and then
    the provider both need the pairs of the same body, so the last few parses are cached.
    """
    if not body:
        return []
    return list(_parse_form_cached(body))


@functools.lru_cache(maxsize=32)
def _parse_form_cached(body: bytes) -> tuple[tuple[str, str], ...]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookSignatureError("webhook body is not valid UTF-8 form data") from exc
    return tuple(parse_qsl(text, keep_blank_values=True))


def _b64decode_lenient(value: str) -> bytes:
    """Decode base64 or base64url, repairing missing padding; raises ValueError when invalid."""
    text = "".join(value.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc


def _url_port_variants(url: str) -> list[str]:
    """`url` as given, without its port, and with the scheme's default port (Twilio's rule).

    Twilio's own validator accepts both forms because "sig generation on back end is
    inconsistent"; like it, a non-default port is also tried removed.
    """
    variants = [url]
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    match = _NETLOC_PORT.match(hostport)
    if match is None:
        return variants
    host, port = match.group(1), match.group(2)
    prefix = userinfo + at
    if port is not None:
        variants.append(parts._replace(netloc=prefix + host).geturl())
    elif parts.scheme in _DEFAULT_PORTS:
        netloc = f"{prefix}{host}:{_DEFAULT_PORTS[parts.scheme]}"
        variants.append(parts._replace(netloc=netloc).geturl())
    return variants


def _twilio_key(url: str, tail: bytes, signature: str) -> str:
    """The replay identity: the signed URL, the canonical parameters and the signature.

    Reuses the parameter bytes the signature check built (re-encoding them cost ~30% of a
    verification); the signature covers exactly those bytes, so equal keys mean equal deliveries.
    """
    return "twilio:req:" + _sha256_hex(url.encode(), tail, signature.encode())


def _twilio_tail(params: Iterable[tuple[str, str]]) -> bytes:
    """Twilio's parameter part: distinct pairs sorted by name, then value, as name + value.

    Sorting the (name, value) tuples is the same order as the SDK's sorted names, each with its
    sorted distinct values.
    """
    return "".join(name + value for name, value in sorted(set(params))).encode("utf-8")


class TwilioVerifier:
    """Twilio `X-Twilio-Signature`: base64 HMAC-SHA1 over URL + sorted name/value pairs."""

    __slots__ = ("_mac",)

    def __init__(self, auth_token: str) -> None:
        """Prepare the HMAC key; an empty token makes every verification fail (fail closed)."""
        self._mac = (
            hmac.new(auth_token.encode("utf-8"), digestmod=hashlib.sha1) if auth_token else None
        )

    def compute_signature(self, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
        """The signature Twilio sends for `url` and form `params`.

        Matches `twilio.request_validator.RequestValidator.compute_signature`: every distinct
        (name, value) pair sorted by name then value, appended as name + value.
        """
        return self._sign(url.encode("utf-8"), _twilio_tail(params))

    def _sign(self, url: bytes, tail: bytes) -> str:
        if self._mac is None:
            raise WebhookSignatureError("twilio auth token is not configured")
        mac = self._mac.copy()
        mac.update(url)
        mac.update(tail)
        return base64.b64encode(mac.digest()).decode("ascii")

    def _check(self, url: str, params: Params, signature: str) -> bytes:
        """Raise unless `signature` matches; return the canonical parameter bytes it covered."""
        if self._mac is None:
            raise WebhookSignatureError("twilio auth token is not configured")
        if not signature:
            raise WebhookSignatureError(f"missing {TWILIO_SIGNATURE_HEADER} header")
        received = signature.encode("utf-8")
        tail = _twilio_tail(params)
        for candidate in _url_port_variants(url):
            expected = self._sign(candidate.encode("utf-8"), tail).encode("ascii")
            if hmac.compare_digest(expected, received):
                return tail
        raise WebhookSignatureError(f"invalid twilio signature for URL {url}")

    @staticmethod
    def replay_key(url: str, params: Params, signature: str) -> str:
        """`twilio:req:` + sha256(url, canonical sorted params, signature).

        The `I-Twilio-Idempotency-Token` header is deliberately left out: Twilio's retry of the
        same request carries a new token but is still the same delivery.
        """
        return _twilio_key(url, _twilio_tail(params), signature)

    def verify_form(self, url: str, params: Params, signature: str | None) -> str:
        """Verify a form-encoded webhook; return its replay key."""
        sig = (signature or "").strip()
        tail = self._check(url, params, sig)
        return _twilio_key(url, tail, sig)

    def verify_json(self, url: str, body: bytes, signature: str | None) -> str:
        """Verify a JSON-body webhook: the URL carries `bodySHA256`, signed with no params."""
        sig = (signature or "").strip()
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        expected_hash = query.get("bodySHA256", "")
        actual_hash = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(actual_hash.encode(), expected_hash.encode()):
            raise WebhookSignatureError("twilio bodySHA256 does not match the request body")
        self._check(url, (), sig)
        return self.replay_key(url, (), sig)

    def verify_request(self, request: WebhookRequest) -> str:
        """Verify a webhook the server read; JSON variant when the query has `bodySHA256`."""
        signature = request.headers.get(TWILIO_SIGNATURE_HEADER)
        if request.query_value("bodySHA256") is not None:
            return self.verify_json(request.verify_url, request.body, signature)
        return self.verify_form(request.verify_url, parse_form(request.body), signature)

    def verify_upgrade(self, wss_url: str, headers: Mapping[str, str]) -> str:
        """Verify a media-stream websocket upgrade: Twilio signs the `wss://` URL alone."""
        return self.verify_form(wss_url, (), headers.get(TWILIO_SIGNATURE_HEADER))


def parse_ed25519_public_key(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as base64 raw, base64 DER SPKI or PEM.

    Raises:
        ValueError: the text is none of those, or not an Ed25519 key.
    """
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        body = "".join(
            line for line in stripped.splitlines() if line and not line.startswith("-----")
        )
        der = _b64decode_lenient(body)
    else:
        der = _b64decode_lenient(stripped)
    if len(der) == 32:
        return der
    if len(der) == len(ED25519_SPKI_PREFIX) + 32 and der.startswith(ED25519_SPKI_PREFIX):
        return der[len(ED25519_SPKI_PREFIX) :]
    raise ValueError("not an Ed25519 public key (expected base64 raw 32 bytes, DER SPKI or PEM)")


class TelnyxVerifier:
    """Telnyx `telnyx-signature-ed25519`: Ed25519 over `timestamp|raw body`, 300 s window."""

    __slots__ = ("_clock", "_key", "_key_problem", "_tolerance")

    def __init__(
        self,
        public_key: str | None,
        *,
        clock: Callable[[], float] = time.time,
        tolerance_seconds: float = TELNYX_TIMESTAMP_TOLERANCE_SECONDS,
    ) -> None:
        """Parse the key once. A missing or invalid key does not raise here: every
        verification then fails closed with a message saying how to fix the config."""
        self._clock = clock
        self._tolerance = tolerance_seconds
        self._key: VerifyKey | None = None
        self._key_problem = ""
        if not public_key:
            self._key_problem = "missing telnyx.public_key (configure it to verify webhooks)"
            return
        try:
            self._key = VerifyKey(parse_ed25519_public_key(public_key))
        except (ValueError, TypeError):
            self._key_problem = "telnyx.public_key is not a valid Ed25519 public key"

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> str:
        """Verify a delivery; return `telnyx:` + sha256(timestamp, canonical signature, body).

        The signature is checked before the clock, so "timestamp outside window" is only ever
        reported for genuinely signed requests: it then means clock skew or a late replay, not
        forgery.
        """
        if self._key is None:
            raise WebhookSignatureError(self._key_problem)
        ts = (timestamp or "").strip()
        sig_text = (signature or "").strip()
        if not ts or not sig_text:
            raise WebhookSignatureError(
                f"missing {TELNYX_SIGNATURE_HEADER} or {TELNYX_TIMESTAMP_HEADER} header"
            )
        if _TIMESTAMP.fullmatch(ts) is None:
            raise WebhookSignatureError("telnyx timestamp is not unix seconds")
        try:
            sig = _b64decode_lenient(sig_text)
        except ValueError:
            raise WebhookSignatureError("telnyx signature is not base64") from None
        if len(sig) != 64:
            raise WebhookSignatureError("telnyx signature does not decode to 64 bytes")
        try:
            self._key.verify(ts.encode("ascii") + b"|" + body, sig)
        except BadSignatureError:
            raise WebhookSignatureError("invalid telnyx signature") from None
        if abs(self._clock() - int(ts)) > self._tolerance:
            raise WebhookSignatureError("telnyx timestamp outside the 300 s window")
        canonical = base64.b64encode(sig)
        return "telnyx:" + _sha256_hex(ts.encode("ascii"), canonical, body)

    def verify_request(self, request: WebhookRequest) -> str:
        """Verify a webhook the server read (raw body bytes, never re-serialised JSON)."""
        return self.verify(
            request.body,
            request.headers.get(TELNYX_SIGNATURE_HEADER),
            request.headers.get(TELNYX_TIMESTAMP_HEADER),
        )


def plivo_v3_base(method: str, url: str, params: Params) -> str:
    """The string Plivo V3 signs before `.nonce` (as `plivo.utils.signature_v3` builds it).

    scheme://host/path, then the URL's query as sorted `k=v&...`; for POST, `?query`, a `.` when
    both query and params exist, and the params as sorted `kv` with no separators. For GET the
    params are merged into the query (the URL's values win) and no params part follows.
    """
    parts = urlparse(url)
    base = urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    if method.upper() == "GET":
        merged = {**grouped, **query}
        qs = "&".join(f"{k}={v}" for k in sorted(merged) for v in sorted(merged[k]))
        return f"{base}?{qs}" if qs else base
    qs = "&".join(f"{k}={v}" for k in sorted(query) for v in sorted(query[k]))
    if not grouped:
        return f"{base}?{qs}" if qs else base
    body = "".join(k + v for k in sorted(grouped) for v in sorted(grouped[k]))
    return f"{base}?{qs}.{body}" if qs else f"{base}?{body}"


class PlivoVerifier:
    """Plivo `X-Plivo-Signature-V3` (HMAC-SHA256 with nonce); V2 only when opted in.

    V2 signs the URL without its query plus the nonce, never the body: a V2 header pair copied
    from one genuine delivery verifies any forged body sent to the same path. It is therefore
    refused unless `plivo.accept_v2_signatures` is set (`accept_v2`), and even then every nonce
    seen on a verified delivery is remembered (`plivo_nonce_keys`), so such a copy is a replay.
    """

    __slots__ = ("_accept_v2", "_mac")

    def __init__(self, auth_token: str, *, accept_v2: bool = False) -> None:
        """Prepare the HMAC key; an empty token makes every verification fail (fail closed)."""
        self._mac = (
            hmac.new(auth_token.encode("utf-8"), digestmod=hashlib.sha256) if auth_token else None
        )
        self._accept_v2 = accept_v2

    def _digest(self, data: str) -> bytes:
        if self._mac is None:
            raise WebhookSignatureError("plivo auth token is not configured")
        mac = self._mac.copy()
        mac.update(data.encode("utf-8"))
        return mac.digest()

    def compute_v3(self, method: str, url: str, params: Params, nonce: str) -> str:
        """The V3 signature Plivo sends for this request."""
        digest = self._digest(f"{plivo_v3_base(method, url, params)}.{nonce}")
        return base64.b64encode(digest).decode("ascii")

    def compute_v2(self, url: str, nonce: str) -> str:
        """The V2 signature: HMAC-SHA256 over the URL without its query, then the nonce."""
        return base64.b64encode(self._digest(_without_query(url) + nonce)).decode("ascii")

    @staticmethod
    def _matches(expected: bytes, header: str) -> bool:
        """Any comma-separated signature equals `expected`, compared as decoded bytes in
        constant time (both sides canonicalised, so whitespace or padding cannot matter)."""
        found = False
        for candidate in header.split(","):
            try:
                decoded = _b64decode_lenient(candidate)
            except ValueError:
                continue
            found |= hmac.compare_digest(decoded, expected)
        return found

    def verify_v3(
        self, method: str, url: str, params: Params, signatures: str | None, nonce: str | None
    ) -> str:
        """Verify V3; return `plivo:v3:` + sha256(canonical URL, nonce).

        The canonical URL has its query sorted (what V3 signs), so a replay with its query
        parameters reordered has the same key.
        """
        sig, nce = (signatures or "").strip(), (nonce or "").strip()
        if not sig or not nce:
            raise WebhookSignatureError("missing Plivo V3 signature headers")
        if method.upper() not in ("GET", "POST"):
            raise WebhookSignatureError("plivo V3 signatures cover only GET and POST")
        expected = self._digest(f"{plivo_v3_base(method, url, params)}.{nce}")
        if not self._matches(expected, sig):
            raise WebhookSignatureError(f"invalid plivo V3 signature for URL {url}")
        return "plivo:v3:" + _sha256_hex(canonical_url(url).encode(), nce.encode())

    def verify_v2(self, url: str, signature: str | None, nonce: str | None) -> str:
        """Verify V2; return `plivo:v2:` + sha256(url without query, nonce).

        Raises WebhookSignatureError unless V2 was accepted at construction.
        """
        if not self._accept_v2:
            raise WebhookSignatureError(
                "plivo V2 signature refused: V2 signs only the URL and nonce, not the body "
                "(set plivo.accept_v2_signatures = true to accept it, or enable V3 signatures)"
            )
        sig, nce = (signature or "").strip(), (nonce or "").strip()
        if not sig or not nce:
            raise WebhookSignatureError("missing Plivo V2 signature headers")
        base = _without_query(url)
        if not self._matches(self._digest(base + nce), sig):
            raise WebhookSignatureError(f"invalid plivo V2 signature for URL {base}")
        return "plivo:v2:" + _sha256_hex(base.encode(), nce.encode())

    def verify_request(self, request: WebhookRequest) -> str:
        """Verify a webhook the server read: V3 when its header pair is present, else V2.

        A request carrying V3 headers must verify by V3: it never falls back to V2.
        """
        headers = request.headers
        if _header(headers, PLIVO_V3_SIGNATURE_HEADER) and _header(headers, PLIVO_V3_NONCE_HEADER):
            params = parse_form(request.body) if request.method.upper() == "POST" else []
            return self.verify_v3(
                request.method,
                request.verify_url,
                params,
                headers.get(PLIVO_V3_SIGNATURE_HEADER),
                headers.get(PLIVO_V3_NONCE_HEADER),
            )
        if _header(headers, PLIVO_V2_SIGNATURE_HEADER) and _header(headers, PLIVO_V2_NONCE_HEADER):
            return self.verify_v2(
                request.verify_url,
                headers.get(PLIVO_V2_SIGNATURE_HEADER),
                headers.get(PLIVO_V2_NONCE_HEADER),
            )
        raise WebhookSignatureError("missing Plivo signature headers (V3 or V2)")


def canonical_url(url: str) -> str:
    """`url` with its query pairs sorted (by name, then value) and no fragment.

    Plivo V3 signs the query sorted, so two orders of one query are one signed request.
    """
    parts = urlsplit(url)
    pairs = sorted(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(pairs), ""))


def replay_aliases(provider_name: str, url: str, headers: Mapping[str, str]) -> tuple[str, ...]:
    """Further replay keys of a verified delivery besides the verifier's own (SPEC 8.6): one
    per nonce in the provider's declared `nonce_headers` (only Plivo declares any).

    Plivo sends a V2 and a V3 pair on each callback. Remembering both nonces (keyed by the URL
    without its query, which is all V2 signs) means a V2 pair lifted from a delivery that
    verified by V3 is caught as a replay even where V2 is accepted.
    """
    declared = catalog.spec(provider_name)
    if declared is None or not declared.nonce_headers:
        return ()
    base = _without_query(url).encode()
    nonces = {_header(headers, name) for name in declared.nonce_headers}
    return tuple(
        f"{provider_name}:nonce:" + _sha256_hex(base, nonce.encode())
        for nonce in sorted(nonces)
        if nonce
    )


def _without_query(url: str) -> str:
    parts = urlparse(url)
    return urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))
