"""Local-only host classification and the public-webhook rule."""

from __future__ import annotations

import dataclasses

import pytest

from daemon.config.exposure import (
    check_public_webhook,
    is_local_api,
    is_local_only_host,
    is_loopback_host,
    local_webhook_url,
)
from daemon.config.model import Config, ServeConfig, TwilioConfig
from daemon.errors import ConfigError


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("app.localhost", True),
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("127.1", True),
        ("0x7f000001", True),
        ("2130706433", True),
        ("0.0.0.0", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.1.10", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("::", True),
        ("::1", True),
        ("[::1]", True),
        ("fe80::1%eth0", True),
        ("fc00::1", True),
        ("fd12:3456::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:7f00:1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:192.168.0.1", True),
        ("::ffff:172.16.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        ("voice.example.com", False),
        ("10.example.com", False),
        ("", True),
    ],
)
def test_local_only_host_table(host: str, local: bool) -> None:
    """Loopback, unspecified, RFC 1918, CGNAT, link-local, ULA and IPv4-mapped are local."""
    assert is_local_only_host(host) is local


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.2.3.4", True),
        ("::1", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback_host(host: str, loopback: bool) -> None:
    """Only this machine counts as loopback (the skip-signature rule)."""
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8099", True),
        ("http://[::1]:80/x", True),
        ("https://api.twilio.com", False),
        ("not a url", False),
    ],
)
def test_is_local_api(url: str, local: bool) -> None:
    """A provider API on a local address is a simulator."""
    assert is_local_api(url) is local


def twilio(**changes: object) -> Config:
    return dataclasses.replace(Config(provider="twilio"), **changes)  # type: ignore[arg-type]


def test_real_provider_on_local_url_is_refused() -> None:
    """The message names the URL and all three ways out."""
    with pytest.raises(ConfigError) as info:
        check_public_webhook(twilio(), "http://[::ffff:7f00:1]:3334/voice/webhook")
    message = info.value.message
    assert 'provider "twilio"' in message and "local-only" in message
    assert "public_url" in message and "ngrok" in message and "funnel" in message


def test_public_url_and_mock_and_simulator_pass() -> None:
    """A public host, the mock provider and a local simulator API are all accepted."""
    check_public_webhook(twilio(), "https://voice.example.com/voice/webhook")
    check_public_webhook(Config(), "http://127.0.0.1:3334/voice/webhook")
    sim = twilio(twilio=TwilioConfig(api_base_url="http://127.0.0.1:9000"))
    check_public_webhook(sim, "http://127.0.0.1:3334/voice/webhook")


def test_local_webhook_url_brackets_ipv6() -> None:
    """The local URL is http://<bind>:<port><path>, IPv6 in brackets."""
    assert local_webhook_url(Config()) == "http://127.0.0.1:3334/voice/webhook"
    config = Config(serve=ServeConfig(bind="::1", port=8080, path="/hook"))
    assert local_webhook_url(config) == "http://[::1]:8080/hook"
