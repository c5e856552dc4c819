"""Which URL a provider signed, and which client a request came from. Pure.

Providers sign the public URL they called, not our bind address, so the webhook server must
rebuild it (SPEC 8 step 5). Forwarding headers are attacker-controlled unless a proxy we trust set
them, so they are believed only when the operator opted in (`allowed_hosts` or
`trust_forwarding_headers`) and the socket peer is a configured trusted proxy, or under the ngrok
free-tier loopback rule. Believing a header never accepts a bad signature: it only decides which
URL the signature is checked against.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_HOST_HEADERS = ("X-Forwarded-Host", "X-Original-Host", "Ngrok-Forwarded-Host")
"""Tried in this order; the first that holds a valid (and allowed) host wins."""

LOOPBACK_BINDS = frozenset({"127.0.0.1", "::1", "localhost"})

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
_PORT = re.compile(r"\d{1,5}", re.ASCII)


def parse_ip(text: str | None) -> IpAddress | None:
    """An IP address with IPv4-mapped IPv6 (`::ffff:a.b.c.d`) folded to its IPv4 form."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_network(text: str) -> IpNetwork:
    """A trusted-proxy entry: one address or a CIDR block (mapped IPv6 folded to IPv4)."""
    address = parse_ip(text)
    if address is not None:
        return ipaddress.ip_network(address)
    return ipaddress.ip_network(text.strip(), strict=False)


def parse_host(value: str | None) -> tuple[str, str] | None:
    """Validate a Host-style value; return (hostname, authority) lower-cased, or None.

    The hostname is RFC 1123 (at most 253 characters, labels of letters, digits and inner
    hyphens, at most 63 each) or a bracketed IPv6 literal; an optional `:port` is kept in the
    authority. Anything with `@`, spaces or other characters is refused, so a header can never
    smuggle userinfo or a path into the rebuilt URL. Only ASCII is considered, and before
    lower-casing: `str.lower` folds some non-ASCII letters into ASCII ones (the Kelvin sign
    U+212A becomes `k`), which would let a look-alike pass an `allowed_hosts` filter.
    """
    if not value or not value.isascii():
        return None
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[: end + 1], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
    else:
        host, sep, port = text.partition(":")
        rest = sep + port
        if not host or len(host) > 253 or not all(_LABEL.fullmatch(p) for p in host.split(".")):
            return None
    if rest:
        port_text = rest[1:]
        if rest[0] != ":" or _PORT.fullmatch(port_text) is None or not 0 < int(port_text) < 65536:
            return None
    return host, host + rest


def _first_value(headers: Mapping[str, str], name: str) -> str:
    """The first comma-separated value of a header (proxies append, the first is the origin)."""
    return (headers.get(name) or "").split(",", 1)[0].strip()


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """The settings that decide the verification URL and the client address.

    Built by the daemon from the config (`public_url`, `[webhook_security]`, `[tunnel]`,
    `serve.bind`). `public_url` is the *effective* public URL: the configured one, the URL a
    tunnel or Tailscale learned at start-up, or the local URL when a provider simulator runs on
    this machine; replace the policy when it changes.
    """

    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    trust_forwarding_headers: bool = False
    trusted_proxy_ips: tuple[str, ...] = ()
    tunnel_provider: str = "none"
    allow_ngrok_free_tier_loopback_bypass: bool = False
    bind: str = "127.0.0.1"
    tunnel_agent: bool = False
    """An ngrok tunnel or Tailscale serve/funnel forwards to us: its agent connects from
    loopback and appends the real client to `X-Forwarded-For` (see `client_ip`)."""
    _origin: str | None = field(init=False, repr=False, compare=False, default=None)
    _allowed: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _proxies: tuple[IpNetwork, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        """Pre-parse everything once; raise ValueError naming a bad value."""
        origin = None
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
                raise ValueError(f"public_url {self.public_url!r} is not an http(s) URL")
            origin = f"{parts.scheme}://{parts.netloc.lower()}"
        object.__setattr__(self, "_origin", origin)
        object.__setattr__(
            self, "_allowed", frozenset(h.strip().lower() for h in self.allowed_hosts)
        )
        try:
            proxies = tuple(_parse_network(ip) for ip in self.trusted_proxy_ips)
        except ValueError as exc:
            raise ValueError(f"webhook_security.trusted_proxy_ips: {exc}") from None
        object.__setattr__(self, "_proxies", proxies)

    @property
    def origin(self) -> str | None:
        """`scheme://authority` of the public URL, when there is one."""
        return self._origin

    @property
    def ngrok_loopback_bypass(self) -> bool:
        """The free-tier rule applies: opted in, ngrok tunnel, and a loopback bind."""
        return (
            self.allow_ngrok_free_tier_loopback_bypass
            and self.tunnel_provider == "ngrok"
            and (self.bind in LOOPBACK_BINDS or _is_loopback(parse_ip(self.bind)))
        )

    def is_trusted_proxy(self, peer: str | None) -> bool:
        """The socket peer is listed in `trusted_proxy_ips`; no peer is never trusted."""
        address = parse_ip(peer)
        return address is not None and any(address in net for net in self._proxies)

    def trusts_forwarding(self, peer: str | None) -> bool:
        """Forwarding headers from this peer may rebuild the URL."""
        if self.ngrok_loopback_bypass and _is_loopback(parse_ip(peer)):
            return True
        opted_in = bool(self._allowed) or self.trust_forwarding_headers
        return opted_in and self.is_trusted_proxy(peer)

    def host_allowed(self, hostname: str) -> bool:
        """An `allowed_hosts` list filters the host; no list allows any valid host."""
        return not self._allowed or hostname in self._allowed


def _is_loopback(address: IpAddress | None) -> bool:
    return address is not None and address.is_loopback


def verification_url(
    policy: UrlPolicy, *, target: str, peer: str | None, headers: Mapping[str, str]
) -> str | None:
    """The URL the provider signed, or None when no acceptable host is known (fail closed).

    With a public URL: its scheme and authority plus the request's path and query. Otherwise
    `https://` (providers call public https endpoints) or a trusted `X-Forwarded-Proto`, and the
    first valid, allowed host among the trusted forwarding headers, then `Host`. The port, when
    the chosen header carries one, is kept; Twilio verification also tries the URL without it.

    Args:
        policy: the URL policy.
        target: the raw request target, path and query exactly as received (`/p?a=1`).
        peer: the socket peer address, or None.
        headers: the request headers (case-insensitive mapping).
    """
    if policy.origin is not None:
        return policy.origin + target
    scheme = "https"
    authority = None
    if policy.trusts_forwarding(peer):
        proto = _first_value(headers, "X-Forwarded-Proto").lower()
        if proto in ("http", "https"):
            scheme = proto
        for name in FORWARDED_HOST_HEADERS:
            parsed = parse_host(_first_value(headers, name))
            if parsed is not None and policy.host_allowed(parsed[0]):
                authority = parsed[1]
                break
    if authority is None:
        parsed = parse_host(headers.get("Host"))
        if parsed is None or not policy.host_allowed(parsed[0]):
            return None
        authority = parsed[1]
    return f"{scheme}://{authority}{target}"


def stream_verification_url(
    policy: UrlPolicy, *, target: str, peer: str | None, headers: Mapping[str, str]
) -> str | None:
    """The `wss://` (or `ws://`) URL Twilio signs on a media-stream websocket upgrade."""
    url = verification_url(policy, target=target, peer=peer, headers=headers)
    if url is None:
        return None
    scheme, sep, rest = url.partition("://")
    return {"https": "wss", "http": "ws"}.get(scheme, scheme) + sep + rest


def client_ip(peer: str | None, headers: Mapping[str, str], policy: UrlPolicy) -> str | None:
    """The client address for per-IP limits.

    `X-Forwarded-For` (else `X-Real-IP`) counts only when `trust_forwarding_headers` is on and
    the peer is a trusted proxy: the list is walked right to left, skipping trusted proxies, and
    the first other address is the client (the leftmost if all are trusted). `allowed_hosts`
    alone never trusts forwarded addresses. Under an ngrok tunnel or Tailscale serve/funnel
    (`tunnel_agent`) a loopback peer is the agent, so the client is the last `X-Forwarded-For`
    entry, the one the agent appended (entries left of it are the client's own claims): an
    attacker behind the tunnel never shares the provider's bucket. Otherwise the socket
    address, with IPv4-mapped IPv6 folded to IPv4.
    """
    address = parse_ip(peer)
    own = str(address) if address is not None else peer
    if not (policy.trust_forwarding_headers and policy.is_trusted_proxy(peer)):
        if policy.tunnel_agent and _is_loopback(address):
            forwarded = (headers.get("X-Forwarded-For") or "").rsplit(",", 1)[-1]
            client = parse_ip(forwarded)
            return str(client) if client is not None else own
        return own
    hops = [h.strip() for h in (headers.get("X-Forwarded-For") or "").split(",") if h.strip()]
    if not hops:
        real = parse_ip(headers.get("X-Real-IP"))
        return str(real) if real is not None else own
    found: IpAddress | None = None
    for hop in reversed(hops):
        hop_address = parse_ip(hop)
        if hop_address is None:
            break
        found = hop_address
        if not policy.is_trusted_proxy(hop):
            return str(hop_address)
    return str(found) if found is not None else own
