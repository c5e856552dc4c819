"""The verification URL and client address: forwarding, trusted proxies, allowed hosts, ngrok."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from daemon.webhooks.urls import (
    UrlPolicy,
    client_ip,
    parse_host,
    stream_verification_url,
    verification_url,
)

TARGET = "/voice/webhook?callId=abc&type=status"
FWD = {
    "Host": "127.0.0.1:3334",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "public.example.com",
}


def url(policy: UrlPolicy, peer: str | None, headers: dict[str, str]) -> str | None:
    return verification_url(policy, target=TARGET, peer=peer, headers=CIMultiDict(headers))


@pytest.mark.parametrize(
    ("policy", "peer", "headers", "expected"),
    [
        # public_url wins: its scheme and authority, the request's path and query.
        (
            UrlPolicy(public_url="https://Pub.example.com:8443/ignored/path?x=1"),
            "10.0.0.1",
            FWD,
            "https://pub.example.com:8443" + TARGET,
        ),
        # No opt-in: forwarding headers ignored, Host used, https assumed.
        (UrlPolicy(), "10.0.0.1", FWD, "https://127.0.0.1:3334" + TARGET),
        # Opted in but no trusted_proxy_ips configured: still ignored.
        (
            UrlPolicy(trust_forwarding_headers=True),
            "10.0.0.1",
            FWD,
            "https://127.0.0.1:3334" + TARGET,
        ),
        # Opted in and peer trusted: forwarded host and proto.
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1",)),
            "10.0.0.1",
            {**FWD, "X-Forwarded-Proto": "http"},
            "http://public.example.com" + TARGET,
        ),
        # Peer not in the list: ignored.
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1",)),
            "10.0.0.2",
            FWD,
            "https://127.0.0.1:3334" + TARGET,
        ),
        # IPv4-mapped IPv6 peer equals its IPv4 entry, and the reverse.
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1",)),
            "::ffff:10.0.0.1",
            FWD,
            "https://public.example.com" + TARGET,
        ),
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("::ffff:10.0.0.1",)),
            "10.0.0.1",
            FWD,
            "https://public.example.com" + TARGET,
        ),
        # CIDR entries work.
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.0/8",)),
            "10.9.8.7",
            FWD,
            "https://public.example.com" + TARGET,
        ),
        # No peer address with a list: untrusted.
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1",)),
            None,
            FWD,
            "https://127.0.0.1:3334" + TARGET,
        ),
        # allowed_hosts opts in to forwarding (with a trusted peer) and filters the host.
        (
            UrlPolicy(allowed_hosts=("public.example.com",), trusted_proxy_ips=("10.0.0.1",)),
            "10.0.0.1",
            FWD,
            "https://public.example.com" + TARGET,
        ),
        # allowed_hosts without trusted proxies: forwarded host ignored, Host not allowed -> None.
        (UrlPolicy(allowed_hosts=("public.example.com",)), "10.0.0.1", FWD, None),
        # allowed_hosts skips a disallowed forwarded host and takes the next header.
        (
            UrlPolicy(allowed_hosts=("ok.example.com",), trusted_proxy_ips=("10.0.0.1",)),
            "10.0.0.1",
            {**FWD, "X-Original-Host": "ok.example.com"},
            "https://ok.example.com" + TARGET,
        ),
        # Ngrok-Forwarded-Host is the third choice; only the first comma value counts.
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1",)),
            "10.0.0.1",
            {"Host": "x", "Ngrok-Forwarded-Host": "abc.ngrok-free.app, evil.com"},
            "https://abc.ngrok-free.app" + TARGET,
        ),
        # Invalid forwarded hosts fall back to Host.
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1",)),
            "10.0.0.1",
            {"Host": "good.example.com", "X-Forwarded-Host": "user@evil.com"},
            "https://good.example.com" + TARGET,
        ),
        # A bogus proto is ignored.
        (
            UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1",)),
            "10.0.0.1",
            {**FWD, "X-Forwarded-Proto": "javascript"},
            "https://public.example.com" + TARGET,
        ),
        # No usable Host at all: None (verification fails closed).
        (UrlPolicy(), "10.0.0.1", {}, None),
        (UrlPolicy(), "10.0.0.1", {"Host": "bad host"}, None),
        # Bracketed IPv6 Host with a port.
        (UrlPolicy(), "::1", {"Host": "[::1]:3334"}, "https://[::1]:3334" + TARGET),
    ],
)
def test_verification_url_table(policy, peer, headers, expected) -> None:
    """Each row: policy, peer, headers -> the URL verified (None = refuse)."""
    assert url(policy, peer, headers) == expected


NGROK: dict[str, Any] = dict(tunnel_provider="ngrok", allow_ngrok_free_tier_loopback_bypass=True)


@pytest.mark.parametrize(
    ("policy", "peer", "expected_host"),
    [
        (UrlPolicy(**NGROK, bind="127.0.0.1"), "127.0.0.1", "public.example.com"),
        (UrlPolicy(**NGROK, bind="localhost"), "::1", "public.example.com"),
        (UrlPolicy(**NGROK, bind="127.0.0.1"), "::ffff:127.0.0.1", "public.example.com"),
        # A non-loopback peer is ignored even with the bypass.
        (UrlPolicy(**NGROK, bind="127.0.0.1"), "203.0.113.9", "127.0.0.1:3334"),
        # Not effective on a non-loopback bind, without the flag, or with another tunnel.
        (UrlPolicy(**NGROK, bind="0.0.0.0"), "127.0.0.1", "127.0.0.1:3334"),
        (UrlPolicy(tunnel_provider="ngrok", bind="127.0.0.1"), "127.0.0.1", "127.0.0.1:3334"),
        (
            UrlPolicy(tunnel_provider="none", allow_ngrok_free_tier_loopback_bypass=True),
            "127.0.0.1",
            "127.0.0.1:3334",
        ),
    ],
)
def test_ngrok_free_tier_loopback_rule(policy, peer, expected_host) -> None:
    """Loopback peers' forwarding headers are trusted only under the full ngrok condition."""
    assert url(policy, peer, FWD) == f"https://{expected_host}{TARGET}"


def test_ngrok_bypass_still_filters_allowed_hosts() -> None:
    """The bypass trusts the headers, but an allowed_hosts list still filters them."""
    policy = UrlPolicy(**NGROK, allowed_hosts=("other.example.com",))
    assert url(policy, "127.0.0.1", FWD) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Example.COM", ("example.com", "example.com")),
        ("example.com:8080", ("example.com", "example.com:8080")),
        ("[2001:db8::1]:443", ("[2001:db8::1]", "[2001:db8::1]:443")),
        ("a-b.c", ("a-b.c", "a-b.c")),
        ("user@example.com", None),
        ("-bad.com", None),
        ("bad-.com", None),
        ("a..b", None),
        ("example.com:0", None),
        ("example.com:99999", None),
        ("example.com:http", None),
        ("[not-ipv6]", None),
        ("2001:db8::1", None),
        ("exa mple.com", None),
        ("example.com/path", None),
        ("a" * 64 + ".com", None),
        (".".join(["a" * 50] * 6), None),
        ("", None),
        ("\u212aey.example.com", None),  # Kelvin sign: lower() would make it "key..."
        ("example.co\u0130", None),
        ("\uff45xample.com", None),
    ],
)
def test_parse_host(value: str, expected) -> None:
    """RFC 1123 names, bracketed IPv6, optional port; nothing else."""
    assert parse_host(value) == expected


def test_unicode_look_alike_host_never_passes_allowed_hosts() -> None:
    """The ASCII check runs before lower-casing: a Kelvin-sign host is not `key.example.com`."""
    policy = UrlPolicy(allowed_hosts=("key.example.com",))
    expected = "https://key.example.com" + TARGET
    assert url(policy, "10.0.0.1", {"Host": "key.example.com"}) == expected
    assert url(policy, "10.0.0.1", {"Host": "\u212aEY.example.com"}) is None


def test_stream_url_uses_wss() -> None:
    """The media-stream upgrade is verified against the wss:// form."""
    policy = UrlPolicy(public_url="https://pub.example.com")
    assert (
        stream_verification_url(policy, target="/voice/stream", peer=None, headers=CIMultiDict())
        == "wss://pub.example.com/voice/stream"
    )
    local = UrlPolicy(public_url="http://127.0.0.1:3334")
    assert (
        stream_verification_url(local, target="/s", peer=None, headers={})
        == "ws://127.0.0.1:3334/s"
    )


def test_bad_policy_values_raise() -> None:
    """A non-http public_url or a bad proxy entry is refused when the policy is built."""
    with pytest.raises(ValueError, match="public_url"):
        UrlPolicy(public_url="ftp://x")
    with pytest.raises(ValueError, match="trusted_proxy_ips"):
        UrlPolicy(trusted_proxy_ips=("not-an-ip",))


TUNNEL = UrlPolicy(tunnel_agent=True)
TRUSTING = UrlPolicy(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1", "10.0.0.2"))


@pytest.mark.parametrize(
    ("policy", "peer", "headers", "expected"),
    [
        # Walk right to left, skipping trusted proxies.
        (TRUSTING, "10.0.0.1", {"X-Forwarded-For": "1.1.1.1, 2.2.2.2, 10.0.0.2"}, "2.2.2.2"),
        # All trusted: the leftmost.
        (TRUSTING, "10.0.0.1", {"X-Forwarded-For": "10.0.0.2, 10.0.0.1"}, "10.0.0.2"),
        # X-Real-IP fallback.
        (TRUSTING, "10.0.0.1", {"X-Real-IP": "3.3.3.3"}, "3.3.3.3"),
        # Untrusted peer: socket address, headers ignored.
        (TRUSTING, "9.9.9.9", {"X-Forwarded-For": "1.1.1.1"}, "9.9.9.9"),
        # allowed_hosts alone never trusts forwarded addresses.
        (
            UrlPolicy(allowed_hosts=("a.com",), trusted_proxy_ips=("10.0.0.1",)),
            "10.0.0.1",
            {"X-Forwarded-For": "1.1.1.1"},
            "10.0.0.1",
        ),
        # IPv4-mapped peer folded to IPv4 (and trusted as such).
        (UrlPolicy(), "::ffff:8.8.8.8", {}, "8.8.8.8"),
        (TRUSTING, "::ffff:10.0.0.1", {"X-Forwarded-For": "::ffff:4.4.4.4"}, "4.4.4.4"),
        # Garbage in the chain stops the walk at the peer.
        (TRUSTING, "10.0.0.1", {"X-Forwarded-For": "1.1.1.1, garbage"}, "10.0.0.1"),
        (UrlPolicy(), None, {}, None),
        # Behind ngrok / Tailscale the loopback agent appends the client: the last entry wins,
        # the client's own claims to its left are ignored.
        (TUNNEL, "127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 5.5.5.5"}, "5.5.5.5"),
        (TUNNEL, "::1", {"X-Forwarded-For": "5.5.5.5"}, "5.5.5.5"),
        (TUNNEL, "127.0.0.1", {}, "127.0.0.1"),
        (TUNNEL, "127.0.0.1", {"X-Forwarded-For": "garbage"}, "127.0.0.1"),
        # ... but only from loopback: a remote peer cannot claim an address.
        (TUNNEL, "9.9.9.9", {"X-Forwarded-For": "5.5.5.5"}, "9.9.9.9"),
        # No tunnel: a loopback peer is just itself.
        (UrlPolicy(), "127.0.0.1", {"X-Forwarded-For": "5.5.5.5"}, "127.0.0.1"),
    ],
)
def test_client_ip(policy, peer, headers, expected) -> None:
    """Per-IP limits key on the real client only behind trusted proxies."""
    assert client_ip(peer, CIMultiDict(headers), policy) == expected
