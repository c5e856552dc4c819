"""The two environment settings of daemons sharing a store: bad values are clear errors."""

from __future__ import annotations

import pytest

from daemon.cluster.timing import ENV, heartbeat_seconds
from daemon.cluster.wiring import ADDRESS_ENV, check_address
from daemon.errors import ConfigError


def test_heartbeat_default_override_and_refusals() -> None:
    assert heartbeat_seconds({}) == 5.0
    assert heartbeat_seconds({ENV: "0.5"}) == 0.5
    for bad in ("0", "6", "fast", "nan", "-1"):
        with pytest.raises(ConfigError, match=f"{ENV} = '{bad}': expected seconds between"):
            heartbeat_seconds({ENV: bad})


@pytest.mark.parametrize("good", ["voice-1:3334", "10.0.0.11:3334", "[fd00::1]:3334"])
def test_addresses_accepted(good: str) -> None:
    assert check_address(good) == good


@pytest.mark.parametrize(
    "bad", ["voice-1", "voice-1:", ":3334", "voice-1:99999", "http://voice-1:3334", "voice 1:3334"]
)
def test_addresses_refused_naming_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match=f"{ADDRESS_ENV} = .*: expected host:port"):
        check_address(bad)
