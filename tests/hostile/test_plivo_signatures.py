"""Plivo V2/V3 signatures and replay identities against the real daemon (SPEC 8.4, 8.6).

Every request here is signed with the plivo SDK's own code (the oracle), as Plivo would sign it:
V3 over the URL with its query sorted, the form parameters and the nonce; V2 over the URL without
its query and the nonce only (V2 never covers the body).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import socket
from collections.abc import Callable
from urllib.parse import urlencode

import aiohttp
import pytest
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3, validate_v3_signature

from tests.configs import plivo_config
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.simulators.plivo import AUTH_TOKEN, PlivoSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = PlivoSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

FROM = "+15550100000"
CALLER = "+14155550123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sim: PlivoSimulator, port: int, *, accept_v2: bool = False) -> str:
    return plivo_config(
        sim,
        port=port,
        top='inbound_policy = "open"\n',
        provider_keys="accept_v2_signatures = true\n" if accept_v2 else "",
    )


def nonce() -> str:
    return str(secrets.randbelow(10**20))


def v3_headers(url: str, params: dict[str, str], nce: str) -> dict[str, str]:
    """The V3 pair Plivo sends (the SDK's algorithm), checked by the SDK's validator."""
    base = construct_post_url(url, dict(params)).decode()
    signature = get_signature_v3(AUTH_TOKEN.encode(), base, nce.encode()).decode()
    assert validate_v3_signature("POST", url, nce, AUTH_TOKEN, signature, dict(params))
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nce}


def v2_headers(url: str, nce: str) -> dict[str, str]:
    """The V2 pair: HMAC-SHA256 of the URL without query + nonce, valid for the SDK."""
    base = url.split("?", 1)[0]
    digest = hmac.new(AUTH_TOKEN.encode(), (base + nce).encode(), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    assert validate_signature(url, nce, signature, AUTH_TOKEN)
    return {"X-Plivo-Signature-V2": signature, "X-Plivo-Signature-V2-Nonce": nce}


def answer(call_uuid: str) -> dict[str, str]:
    """The form Plivo posts to the answer URL of an inbound call."""
    return {
        "CallUUID": call_uuid,
        "From": CALLER,
        "To": FROM,
        "Direction": "inbound",
        "CallStatus": "ringing",
        "Event": "StartApp",
    }


async def post(url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=urlencode(params),
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        ) as response,
    ):
        return response.status, await response.text()


async def provider_ids(d: DaemonHarness) -> list[str]:
    calls = (await rpc(d, "voicecall.list", {"limit": 50}))["calls"]
    return sorted(c["providerCallId"] for c in calls)


async def events_of(d: DaemonHarness) -> int:
    calls = (await rpc(d, "voicecall.list", {"limit": 50}))["calls"]
    return sum(len(c.get("transcript", [])) for c in calls)


async def test_v2_pair_from_a_genuine_delivery_cannot_carry_a_forged_body(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Default config: V2 is refused (401) even though the SDK calls the pair valid."""
    port = free_port()
    d = await start(make_daemon, config(sim, port))
    url = f"http://127.0.0.1:{port}/voice/webhook?flow=answer"
    genuine = answer("genuine-uuid")
    headers = {**v3_headers(url, genuine, nonce()), **v2_headers(url, nonce())}
    status, _ = await post(url, genuine, headers)
    assert status == 200
    v2_only = {k: v for k, v in headers.items() if "V2" in k}
    status, _ = await post(url, answer("forged-uuid"), v2_only)
    assert status == 401
    # a fresh, correctly signed V2-only request is refused too: V2 never covers the body
    status, _ = await post(url, answer("fresh-v2-uuid"), v2_headers(url, nonce()))
    assert status == 401
    assert await provider_ids(d) == ["genuine-uuid"]


async def test_accepted_v2_still_rejects_a_nonce_already_seen(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """With `accept_v2_signatures`, a V2 pair lifted from a verified delivery is a replay."""
    port = free_port()
    d = await start(make_daemon, config(sim, port, accept_v2=True))
    url = f"http://127.0.0.1:{port}/voice/webhook?flow=answer"
    genuine = answer("genuine-uuid")
    headers = {**v3_headers(url, genuine, nonce()), **v2_headers(url, nonce())}
    status, first = await post(url, genuine, headers)
    assert status == 200
    v2_only = {k: v for k, v in headers.items() if "V2" in k}
    status, again = await post(url + "&evil=1", answer("forged-uuid"), v2_only)
    assert (status, again) == (200, first)  # the replay answer: the first reply, no effect
    # an unseen V2 nonce is accepted when the operator opted in
    status, _ = await post(url, answer("v2-uuid"), v2_headers(url, nonce()))
    assert status == 200
    assert await provider_ids(d) == ["genuine-uuid", "v2-uuid"]


async def test_v3_replay_with_reordered_query_is_processed_once(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The replay key uses the canonical URL: a reordered query is the same delivery."""
    port = free_port()
    d = await start(make_daemon, config(sim, port))
    base = f"http://127.0.0.1:{port}/voice/webhook"
    url = base + "?flow=answer&a=1&b=2"
    reordered = base + "?b=2&flow=answer&a=1"
    genuine = answer("genuine-uuid")
    headers = v3_headers(url, genuine, nonce())
    status, first = await post(url, genuine, headers)
    assert status == 200
    before = await events_of(d)
    for _ in range(3):
        status, again = await post(reordered, genuine, headers)
        assert (status, again) == (200, first)
    await asyncio.sleep(0.3)
    assert await events_of(d) == before
    assert "replayed plivo webhook delivery ignored" in d.log_text()
