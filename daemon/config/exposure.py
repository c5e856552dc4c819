"""Whether a webhook URL can be reached by a telephony provider on the internet.

Twilio, Telnyx and Plivo call our webhook from their clouds, so a real provider on a loopback or
private address would place calls whose webhooks never arrive: the call rings, then silently
fails. We refuse that up front, unless the provider's API is itself on this machine (a simulator),
in which case a local webhook is exactly right. Pure functions, no I/O, no name resolution.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from daemon.config.model import Config
from daemon.errors import ConfigError
from daemon.providers.catalog import REAL_PROVIDERS, spec

_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", includes the unspecified 0.0.0.0
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # carrier-grade NAT (also Tailscale addresses): not reachable publicly
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # RFC 1918
        "192.168.0.0/16",  # RFC 1918
        "::/128",  # unspecified
        "::1/128",  # loopback
        "fc00::/7",  # unique local addresses
        "fe80::/10",  # link-local
    )
)

# Legacy numeric IPv4 forms (127.1, 0x7f000001, 2130706433) that resolvers still accept.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|\d+)(\.(0x[0-9a-f]+|\d+)){0,3}$", re.IGNORECASE)


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = host.strip().strip("[]").split("%", 1)[0]  # brackets, IPv6 zone id
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        if not _NUMERIC_HOST.match(text):
            return None
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # ::ffff:127.0.0.1 and ::ffff:7f00:1 are 127.0.0.1
    return addr


def is_loopback_host(host: str) -> bool:
    """Whether the host is this machine only: 127.0.0.0/8, ::1 (also IPv4-mapped), localhost."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    addr = _parse_ip(name)
    return addr is not None and addr.is_loopback


def is_local_only_host(host: str) -> bool:
    """Whether a host (name or IP literal) cannot be reached from the internet.

    True for localhost names, loopback, unspecified, RFC 1918, carrier-grade NAT, link-local and
    ULA addresses, including their IPv4-mapped IPv6 forms (`::ffff:127.0.0.1`, `::ffff:7f00:1`).
    Other host names are assumed public: we do not resolve names.
    """
    name = host.strip().strip("[]").rstrip(".").lower()
    if not name:
        return True
    if name == "localhost" or name.endswith(".localhost"):
        return True
    addr = _parse_ip(name)
    if addr is None:
        return False
    # Beyond the named ranges, any address that is not globally routable (IPv4-compatible,
    # NAT64 or 6to4 forms of private space, documentation ranges) cannot be a public webhook.
    return any(addr in net for net in _LOCAL_NETWORKS) or not addr.is_global


def is_local_api(url: str) -> bool:
    """Whether a URL points at this machine or a private network (a provider simulator)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and is_local_only_host(host)


def local_webhook_url(config: Config) -> str:
    """The webhook URL on our own listener: `http://<bind>:<port><path>`, IPv6 bracketed."""
    host = config.serve.bind
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{config.serve.port}{config.serve.path}"


def provider_api_base_url(config: Config) -> str | None:
    """The REST endpoint of the selected provider (its `[name] api_base_url`); None for mock."""
    declared = spec(config.provider)
    if declared is None or not declared.calls_from_the_internet:
        return None
    return str(getattr(config, declared.name).api_base_url)


def check_public_webhook(config: Config, webhook_url: str) -> None:
    """Refuse a real provider whose webhook URL the provider could never reach.

    Raises:
        ConfigError: the provider is twilio, telnyx or plivo, the webhook URL is local-only, and
            the provider's `api_base_url` is not itself local (a simulator on this machine).
    """
    if config.provider not in REAL_PROVIDERS:
        return
    api = provider_api_base_url(config)
    if api is not None and is_local_api(api):
        return
    try:
        host = urlsplit(webhook_url).hostname or ""
    except ValueError:
        host = ""
    if not is_local_only_host(host):
        return
    message = (
        f'provider "{config.provider}" needs a webhook URL it can reach from the internet, but '
        f"{webhook_url} is local-only; publish it in one of three ways: set public_url = "
        '"https://<your host>/voice/webhook" (behind your own proxy), set [tunnel] provider = '
        '"ngrok", or set [tailscale] mode = "funnel"'
    )
    raise ConfigError(message, problems=[message])
