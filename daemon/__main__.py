"""`voicecalld` / `python -m daemon`: run the daemon in the foreground.

The only place that configures logging, picks the event loop (uvloop where available) and
installs signal handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.errors import ConfigError, VoicecallError
from daemon.paths import Paths, resolve_paths

if TYPE_CHECKING:
    from daemon.config.model import Config


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="voicecalld", description="Run the voicecall daemon.")
    parser.add_argument("--config", help="config file")
    parser.add_argument("--socket", help="Unix socket path")
    parser.add_argument("--log-level", default=os.environ.get("VOICECALL_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-file", help="log to this file, rotated by size (default: stderr)")
    parser.add_argument("--workers", type=int, help="worker processes (serve.workers; SPEC 16)")
    # Set by the parent of --workers on each worker it starts (daemon/workers/parent.py).
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rpc-fd", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _setup_logging(level: str, log_file: str | None, worker: int | None = None) -> None:
    from daemon.workers.parent import RawLineFormatter

    handler: logging.Handler
    if log_file:
        from daemon.logfile import DaemonLogHandler, log_max_bytes

        handler = DaemonLogHandler(Path(log_file), log_max_bytes())
    else:
        handler = logging.StreamHandler(sys.stderr)
    tag = f"w{worker} " if worker is not None else ""
    handler.setFormatter(RawLineFormatter(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def _serve(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    from daemon.app import Daemon
    from daemon.ops import systemd

    role = None
    if args.worker is not None:
        from daemon.workers.role import WorkerRole

        role = WorkerRole(args.worker, args.worker_port, os.getppid())
    else:
        for warning in config.warnings:
            logging.getLogger("daemon").warning("config: %s", warning)
    daemon = Daemon(config, paths, role)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload_in_background)
    if args.rpc_fd is not None:
        rpc_socket: socket.socket | None = socket.socket(fileno=args.rpc_fd)
    else:
        activated = systemd.listen_fds()
        rpc_socket = activated[0] if activated else None
    await daemon.start(rpc_socket)
    # Start-up objects live for the daemon's life: keep them out of full collections, whose
    # pauses would stall every media stream at once (SPEC section 12 notes).
    gc.collect()
    gc.freeze()
    systemd.notify("READY=1\nSTATUS=voicecall daemon ready")
    watchdog = systemd.watchdog_interval()
    dog = None
    if watchdog:

        async def _feed() -> None:
            while True:
                systemd.notify("WATCHDOG=1")
                await asyncio.sleep(watchdog)

        dog = asyncio.create_task(_feed())
    try:
        await daemon.wait_stopped()
    finally:
        systemd.notify("STOPPING=1")
        if dog is not None:
            dog.cancel()
        await daemon.stop()
    return 0


def _load(args: argparse.Namespace, paths: Paths) -> Config:
    """The config, with `--workers` in place of serve.workers (checked like the key)."""
    from daemon.config.loader import check_workers, load_config

    config = load_config(paths)
    if args.workers is not None and args.worker is None:
        config = dataclasses.replace(
            config, serve=dataclasses.replace(config.serve, workers=args.workers)
        )
        problem = check_workers(config)
        if problem:
            raise ConfigError(problem.replace("serve.workers =", "--workers", 1))
    return config


def _run_parent(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    """`--workers N` (N > 1): this process starts and watches N worker daemons."""
    from daemon.ops import systemd
    from daemon.workers.parent import Parent

    for warning in config.warnings:
        logging.getLogger("daemon").warning("config: %s", warning)

    def worker_argv(index: int, port: int, fd: int) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "daemon",
            "--socket",
            str(paths.socket),
            "--config",
            str(paths.config),
            "--log-level",
            args.log_level,
            "--worker",
            str(index),
            "--worker-port",
            str(port),
            "--rpc-fd",
            str(fd),
        ]
        return argv

    parent = Parent(config.serve.workers, paths, config.serve.bind, config.serve.port, worker_argv)
    activated = systemd.listen_fds()
    systemd.notify("READY=1\nSTATUS=voicecall daemon workers started")
    return parent.run(activated[0] if activated else None)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `voicecalld`."""
    # Private from the first byte (SPEC section 2): the state folder, the store and its -wal and
    # -shm files, the log, the socket are all created after this line, readable by us alone.
    os.umask(0o077)
    args = _parse_args(argv)
    _setup_logging(args.log_level, args.log_file, args.worker)
    log = logging.getLogger("daemon")
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        loop_factory = None
    try:
        paths = resolve_paths(config=args.config, socket=args.socket)
        config = _load(args, paths)
        if config.serve.workers > 1 and args.worker is None:
            code = _run_parent(args, config, paths)
        else:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                code = runner.run(_serve(args, config, paths))
    except ConfigError as exc:
        log.error("configuration error: %s", exc.message)
        for problem in exc.problems:
            if problem != exc.message:
                log.error("  %s", problem)
        code = 78  # EX_CONFIG
    except VoicecallError as exc:
        log.error("%s", exc.message)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
