"""`voicecalld` / `python -m daemon`: run the daemon in the foreground.

The only place that configures logging, picks the event loop (uvloop where available) and
installs signal handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from daemon.errors import ConfigError, VoicecallError
from daemon.paths import resolve_paths


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="voicecalld", description="Run the voicecall daemon.")
    parser.add_argument("--config", help="config file")
    parser.add_argument("--socket", help="Unix socket path")
    parser.add_argument("--log-level", default=os.environ.get("VOICECALL_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-file", help="log to this file, rotated by size (default: stderr)")
    return parser.parse_args(argv)


def _setup_logging(level: str, log_file: str | None) -> None:
    handler: logging.Handler
    if log_file:
        from daemon.logfile import DaemonLogHandler, log_max_bytes

        handler = DaemonLogHandler(Path(log_file), log_max_bytes())
    else:
        handler = logging.StreamHandler(sys.stderr)
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[handler],
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def _serve(args: argparse.Namespace) -> int:
    from daemon.app import Daemon
    from daemon.config.loader import load_config
    from daemon.ops import systemd

    paths = resolve_paths(config=args.config, socket=args.socket)
    config = load_config(paths)
    for warning in config.warnings:
        logging.getLogger("daemon").warning("config: %s", warning)
    daemon = Daemon(config, paths)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload_in_background)
    activated = systemd.listen_fds()
    await daemon.start(activated[0] if activated else None)
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


def main(argv: list[str] | None = None) -> None:
    """Entry point of `voicecalld`."""
    # Private from the first byte (SPEC section 2): the state folder, the store and its -wal and
    # -shm files, the log, the socket are all created after this line, readable by us alone.
    os.umask(0o077)
    args = _parse_args(argv)
    _setup_logging(args.log_level, args.log_file)
    log = logging.getLogger("daemon")
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            code = runner.run(_serve(args))
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
