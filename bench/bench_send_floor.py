"""The floor under the stream figure: what the outbound sends alone cost this machine.

At 400 streamed calls the daemon writes 20 000 small websocket frames a second, each one
`send` on its own TCP connection, in a burst every 20 ms (SPEC 12). This program does only
that, with no daemon and none of our code: --n loopback connections to a reader process on
the other core, one --bytes write to each every 20 ms for --seconds, through uvloop
transports (as the daemon writes) or bare `os.write` on the socket. It prints the sender's
CPU per write. On loopback the kernel runs the reader's receive path and its wake-up in the
sender's context, as it does for the daemon in bench_daemon_streams.py.

Run: python bench/bench_send_floor.py [--n 400] [--mode uvloop|raw]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import selectors
import socket

import uvloop


def _reader(listener: socket.socket, n: int, core: int) -> None:
    """Accept n connections and read them until they close (the child process)."""
    os.sched_setaffinity(0, {core})
    selector = selectors.DefaultSelector()
    for _ in range(n):
        conn, _ = listener.accept()
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
    open_ = n
    while open_:
        for key, _ in selector.select():
            try:
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if not data:
                selector.unregister(key.fileobj)
                open_ -= 1
    os._exit(0)


async def _send(port: int, args: argparse.Namespace) -> tuple[float, float, int]:
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(args.n):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transports.append(transport)
    fds = [t.get_extra_info("socket").fileno() for t in transports]
    message = b"x" * args.bytes
    ticks = int(args.seconds / 0.02)
    done: asyncio.Future[None] = loop.create_future()
    start = loop.time()
    before = resource.getrusage(resource.RUSAGE_SELF)
    count = 0

    def tick() -> None:
        nonlocal count
        if args.mode == "uvloop":
            for transport in transports:
                transport.write(message)
        else:
            for fd in fds:
                os.write(fd, message)
        count += 1
        if count == ticks:
            done.set_result(None)
        else:
            loop.call_at(start + count * 0.02, tick)

    loop.call_at(start, tick)
    await done
    after = resource.getrusage(resource.RUSAGE_SELF)
    for transport in transports:
        transport.close()
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, ticks * args.n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="connections (streams)")
    parser.add_argument("--bytes", type=int, default=340, help="bytes per write (a Twilio frame)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", choices=("uvloop", "raw"), default="uvloop")
    parser.add_argument("--core", type=int, default=0, help="the sender's core")
    parser.add_argument("--reader-core", type=int, default=1)
    args = parser.parse_args()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(args.n)
    child = os.fork()
    if child == 0:
        _reader(listener, args.n, args.reader_core)
    os.sched_setaffinity(0, {args.core})
    user, system, writes = uvloop.run(_send(listener.getsockname()[1], args))
    os.waitpid(child, 0)
    per = (user + system) / writes * 1e6
    print(
        f"mode={args.mode} n={args.n} bytes={args.bytes} writes={writes}: sender CPU "
        f"{per:.2f} us per write (user {user / writes * 1e6:.2f}, system "
        f"{system / writes * 1e6:.2f}); {(user + system) / args.seconds * 100:.0f} % of a core"
    )


if __name__ == "__main__":
    main()
