"""Connection caps: per address, in all, and the exemption of proxies and tunnel agents."""

from __future__ import annotations

from daemon.webhooks.connections import ConnectionGuard, ConnectionLimits


def test_per_address_cap_then_global_cap() -> None:
    """The 4th connection of one address is refused; others still fit until the global cap."""
    guard = ConnectionGuard(ConnectionLimits(max_connections=6, max_connections_per_ip=3))
    assert [guard.admit("1.1.1.1") for _ in range(3)] == [None] * 3
    assert guard.admit("1.1.1.1") == "over serve.max_connections_per_ip"
    assert [guard.admit("2.2.2.2") for _ in range(3)] == [None] * 3
    assert guard.admit("3.3.3.3") == "over serve.max_connections"
    guard.release("1.1.1.1")
    assert guard.admit("1.1.1.1") is None
    assert guard.total == 6 and guard.open_for("1.1.1.1") == 3


def test_exempt_peer_is_bounded_by_the_global_cap_only() -> None:
    """A trusted proxy or tunnel agent carries many clients: no per-address cap for it."""
    guard = ConnectionGuard(ConnectionLimits(max_connections=10, max_connections_per_ip=2),
                            exempt=lambda address: address == "127.0.0.1")
    assert all(guard.admit("127.0.0.1") is None for _ in range(10))
    assert guard.admit("127.0.0.1") == "over serve.max_connections"
    for _ in range(10):
        guard.release("127.0.0.1")
    assert guard.total == 0 and guard.open_for("127.0.0.1") == 0
