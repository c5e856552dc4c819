"""Signed-webhook flood against a running daemon (SPEC 12: >= 2000/s, p99 <= 20 ms).

Starts a throwaway daemon whose provider (`twilio` by default, `plivo` also works) has its
`api_base_url` on a tiny local HTTP stub, so the daemon accepts its local webhook URL (SPEC 3). Then
POSTs N status callbacks, each with unique call ids and correctly signed over the daemon's
`webhookUrl` (from `daemon.status`), from an aiohttp client with C requests in flight; and a second
pass that re-sends the very same N deliveries (all replays: verify + replay-cache hit, no effects).

SPEC 8 allows at most 8 requests in flight per client address, so the client spreads its C
connections over C/8 loopback source addresses (127.0.0.2, 127.0.0.3, ...), as a provider's
many egress IPs would. Signing happens before the clock starts.

Run: python bench/bench_webhooks.py [--n 5000] [--concurrency 32] [--provider twilio|plivo]
Prints one summary line: unique and replay requests/s, p50, p99, max, and any non-200 answers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import secrets
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import percentile, running_daemon

from daemon.webhooks.security import PlivoVerifier, TwilioVerifier

PER_ADDRESS = 8
"""SPEC 8: the ninth request in flight from one address is a 429."""
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "bench-twilio-auth-token"
PLIVO_ID = "MABENCHBENCHBENCHBENC"
PLIVO_TOKEN = "bench-plivo-auth-token"
FROM = "+15550100000"


class _Stub(BaseHTTPRequestHandler):
    """The provider REST API stub: 200 `{}` for everything (the flood never dials)."""

    def _ok(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_DELETE = _ok

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _config(provider: str, api_base_url: str) -> str:
    if provider == "twilio":
        table = (
            f'[twilio]\naccount_sid = "{TWILIO_SID}"\nauth_token = "{TWILIO_TOKEN}"\n'
            f'api_base_url = "{api_base_url}"\n'
        )
    else:
        table = (
            f'[plivo]\nauth_id = "{PLIVO_ID}"\nauth_token = "{PLIVO_TOKEN}"\n'
            f'api_base_url = "{api_base_url}"\n'
        )
    return f'provider = "{provider}"\nfrom_number = "{FROM}"\n\n[serve]\nport = 0\n\n{table}'


def _deliveries(provider: str, webhook_url: str, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """N signed status callbacks (url, body, headers), each for a different call."""
    out = []
    if provider == "twilio":
        signer = TwilioVerifier(TWILIO_TOKEN)
        for i in range(n):
            params = [
                ("AccountSid", TWILIO_SID),
                ("CallSid", "CA" + uuid.uuid4().hex),
                ("CallStatus", "completed"),
                ("Direction", "outbound-api"),
                ("From", FROM),
                ("To", f"+1555{i:07d}"),
                ("CallDuration", "3"),
            ]
            headers = {
                "X-Twilio-Signature": signer.compute_signature(webhook_url, params),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            out.append((webhook_url, urlencode(params).encode(), headers))
        return out
    plivo = PlivoVerifier(PLIVO_TOKEN)
    url = webhook_url + "?flow=hangup"
    for i in range(n):
        params = [
            ("CallUUID", str(uuid.uuid4())),
            ("CallStatus", "completed"),
            ("Direction", "outbound"),
            ("From", FROM),
            ("To", f"+1555{i:07d}"),
            ("Event", "Hangup"),
            ("HangupCause", "NORMAL_CLEARING"),
        ]
        nonce = str(secrets.randbelow(10**20))
        headers = {
            "X-Plivo-Signature-V3": plivo.compute_v3("POST", url, params, nonce),
            "X-Plivo-Signature-V3-Nonce": nonce,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        out.append((url, urlencode(params).encode(), headers))
    return out


async def _flood(
    deliveries: list[tuple[str, bytes, dict[str, str]]], concurrency: int
) -> tuple[list[float], float, collections.Counter[int]]:
    """Send every delivery with `concurrency` in flight; latencies (ms), wall seconds, statuses."""
    addresses = max(1, -(-concurrency // PER_ADDRESS))
    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, local_addr=(f"127.0.0.{2 + k}", 0))
        )
        for k in range(addresses)
    ]
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    cursor = iter(range(len(deliveries)))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in cursor:
            url, body, headers = deliveries[i]
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[resp.status] += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(sessions[w % addresses]) for w in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        for session in sessions:
            await session.close()
    return latencies, wall, statuses


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(
    pid: int, deliveries: list[tuple[str, bytes, dict[str, str]]], concurrency: int
) -> tuple[list[float], float, collections.Counter[int], float]:
    """One pass, plus the daemon's CPU use during it (1.0 = one core busy)."""
    cpu = _cpu_seconds(pid)
    latencies, wall, statuses = asyncio.run(_flood(deliveries, concurrency))
    return latencies, wall, statuses, (_cpu_seconds(pid) - cpu) / wall


def _fmt(name: str, run: tuple[list[float], float, collections.Counter[int], float]) -> str:
    latencies, wall, _, cpu = run
    return (
        f"{name} rate={len(latencies) / wall:.0f}/s p50={percentile(latencies, 50):.2f}ms "
        f"p99={percentile(latencies, 99):.2f}ms max={max(latencies):.1f}ms "
        f"daemon_cpu={cpu:.0%}"
    )


def main() -> None:
    """Parse arguments, start the stub and the daemon, flood twice, print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="deliveries per pass")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--provider", choices=("twilio", "plivo"), default="twilio")
    args = parser.parse_args()
    if (
        args.provider == "twilio"
        and not (Path(__file__).resolve().parent.parent / "daemon/providers/twilio.py").exists()
    ):
        raise SystemExit("daemon/providers/twilio.py is not there yet: run with --provider plivo")
    stub = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{stub.server_address[1]}"
    try:
        with running_daemon(_config(args.provider, api)) as daemon:
            webhook_url = daemon.rpc("daemon.status")["webhookUrl"]
            warm = _deliveries(args.provider, webhook_url, min(200, args.n))
            asyncio.run(_flood(warm, args.concurrency))
            deliveries = _deliveries(args.provider, webhook_url, args.n)
            assert daemon.proc is not None
            unique = _measured(daemon.proc.pid, deliveries, args.concurrency)
            replay = _measured(daemon.proc.pid, deliveries, args.concurrency)
    finally:
        stub.shutdown()
    bad = {s: c for s, c in (unique[2] + replay[2]).items() if s != 200}
    print(
        f"webhooks {args.provider} {_fmt('unique', unique)} | {_fmt('replay', replay)} | "
        f"n={args.n} c={args.concurrency} "
        f"non200={bad or 0} target>=2000/s p99<=20ms"
    )


if __name__ == "__main__":
    main()
