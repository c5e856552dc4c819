"""The checks behind `voicecall doctor`: each returns lines of `OK|WARN|FAIL <id>: <what> — <fix>`.

Pure reads of this machine: the config file, the keyring, the daemon's socket (never starting
the daemon), a trial bind of the webhook port, and, unless offline, one authenticated GET on the
provider's API. Nothing here blocks for long: every probe has a deadline. Imported only when
`doctor` runs; the provider SDKs and HTTP clients are imported inside the probes that use them.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daemon.config.exposure import (
    check_public_webhook,
    is_local_api,
    is_loopback_host,
    local_webhook_url,
    provider_api_base_url,
)
from daemon.config.loader import REQUIRED, check_document, read_document
from daemon.config.model import DEFAULT_MAX_LOOP_LOAD, Config
from daemon.config.secrets import SECRET_KEYS, keyring_disabled
from daemon.errors import ConfigError, TunnelError
from daemon.paths import Paths
from daemon.providers.catalog import REAL_PROVIDERS, spec
from daemon.realtime.settings import realtime_in_use
from daemon.rpc.client import DaemonUnreachableError, RpcClient
from daemon.rpc.protocol import RpcRemoteError
from daemon.rpc.trust import UntrustedSocketError
from daemon.speech.tts import catalog as tts_catalog
from daemon.store.location import StoreKind

Status = Literal["OK", "WARN", "FAIL", "SKIP"]

DAEMON_TIMEOUT_SECONDS = 1.0
"""How long the daemon may take to answer `daemon.status` before it counts as hung."""
TAILSCALE_TIMEOUT_SECONDS = 5.0
"""How long `tailscale status --json` may take."""
STORE_TIMEOUT_SECONDS = 5.0
"""How long connecting to a PostgreSQL store may take."""


THREE_WAYS = (
    'set public_url = "https://<your host>/voice/webhook" (behind your own proxy), '
    '[tunnel] provider = "ngrok", or [tailscale] mode = "funnel"'
)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    id: str
    status: Status
    message: str
    fix: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The `--json` form."""
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}

    def line(self) -> str:
        """The human form."""
        return f"{self.status} {self.id}: {self.message}" + (f" — {self.fix}" if self.fix else "")


def run_checks(
    paths: Paths, *, offline: bool, keyring_probe: Callable[[], tuple[str, bool, str]]
) -> list[Check]:
    """Every check, in report order.

    Args:
        paths: where the config and the socket are.
        offline: skip the provider API probe.
        keyring_probe: returns (backend name, usable, reason) within a deadline.
    """
    keyring_check, keyring_usable = check_keyring(keyring_probe)
    config, checks = check_config(paths, use_keyring=keyring_usable)
    checks.append(keyring_check)
    daemon_check, daemon_status = check_daemon(paths.socket, config)
    if config is not None:
        checks += check_secrets(config)
        checks += check_exposure(config)
        checks.append(check_stream(config))
        if config.store.kind is StoreKind.POSTGRESQL:
            checks.append(check_database(config))
    checks.append(daemon_check)
    if daemon_status is not None:
        checks.append(check_store(daemon_status))
        checks.append(check_load(daemon_status, config))
    if config is not None:
        checks.append(check_port(config, daemon_status))
        from voicecall_cli.doctor_api import check_provider_api, check_realtime_api

        checks.append(check_provider_api(config, offline=offline))
        if realtime_in_use(config):
            checks.append(check_realtime_api(config, offline=offline))
    return checks


# --- config -------------------------------------------------------------------------------------


def _split(line: str, default_fix: str) -> tuple[str, str]:
    """Loader messages read "<what>; <what to do>": split them into message and fix."""
    what, sep, fix = line.partition("; ")
    return (what, fix) if sep else (line, default_fix)


def _covered_elsewhere(line: str, config: Config | None) -> bool:
    """Whether a loader finding is reported by a more specific check (secrets, exposure)."""
    if config is None:  # the specific checks do not run on a config with errors
        return False
    if any(f"{key} is not set" in line for key in SECRET_KEYS):
        return True
    if line.startswith(f'provider "{config.provider}" needs a webhook'):
        return True
    return line.startswith('[tailscale] mode = "serve"')


def check_config(paths: Paths, *, use_keyring: bool) -> tuple[Config | None, list[Check]]:
    """Read and check the config file; every problem is its own line naming the key."""
    path = paths.config
    try:
        data = read_document(path)
    except ConfigError as exc:
        return None, [
            Check(
                "config",
                "FAIL",
                exc.message,
                "fix the file, or move it away and run `voicecall config init`",
            )
        ]
    source = path if data is not None else None
    config, report = check_document(data or {}, paths, use_keyring=use_keyring, source=source)
    checks: list[Check] = []
    for line in report.errors:
        key = line.split(" ", 1)[0]
        what, fix = _split(
            line,
            f"correct {key} in {path} (`voicecall config set {key} VALUE` "
            f"or `voicecall config unset {key}`)",
        )
        checks.append(Check("config", "FAIL", what, fix))
    for line in report.missing:
        if not _covered_elsewhere(line, config):
            checks.append(Check("config", "FAIL", *_split(line, f"set it in {path}")))
    for line in report.warnings:
        if not _covered_elsewhere(line, config):
            checks.append(Check("config", "WARN", *_split(line, f"edit {path}")))
    if config is not None and data is not None:
        checks += _file_mode(path, config)
    if not any(c.status == "FAIL" for c in checks):
        if data is None:
            summary = f"no config file at {path}: the defaults apply (provider mock)"
        else:
            summary = f"{path} is valid (provider {config.provider if config else '?'})"
        checks.insert(0, Check("config", "OK", summary))
    return config, checks


def _file_mode(path: Path, config: Config) -> list[Check]:
    if "file" not in config.secret_sources.values():
        return []
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return []
    if mode & 0o077:
        return [
            Check(
                "config",
                "WARN",
                f"{path} holds secrets and other users can read it (mode {mode:04o})",
                f"chmod 600 {path}",
            )
        ]
    return []


# --- secrets ------------------------------------------------------------------------------------


def check_keyring(probe: Callable[[], tuple[str, bool, str]]) -> tuple[Check, bool]:
    """Which keyring backend is active and whether it answers; (check, usable)."""
    if keyring_disabled():
        return Check(
            "secrets.backend",
            "OK",
            "VOICECALL_NO_KEYRING is set: the keyring is not read; secrets come from "
            "the environment or the config file",
        ), False
    name, usable, reason = probe()
    if usable:
        return Check("secrets.backend", "OK", f"keyring backend {name} works"), True
    return Check(
        "secrets.backend",
        "WARN",
        f"no usable keyring ({name}): {reason}",
        "see `voicecall secrets backend` for the alternatives (environment variables, "
        "a 0600 config file, keyrings.alt)",
    ), False


@dataclass(frozen=True, slots=True)
class _Need:
    key: str
    why: str
    required: bool
    vendor_url: str | None = None


def _needs(config: Config) -> list[_Need]:
    """The secrets this configuration uses: provider, tunnel, streaming STT/TTS, agent."""
    needs: list[_Need] = []
    provider = config.provider
    declared = spec(provider)
    verify_credential = declared.verify_credential if declared else None
    for key in REQUIRED.get(provider, ()):
        if key in SECRET_KEYS and not (
            key == verify_credential and config.skip_signature_verification
        ):
            needs.append(_Need(key, f'provider "{provider}"', True))
    if config.tunnel.provider == "ngrok":
        needs.append(_Need("tunnel.ngrok_authtoken", '[tunnel] provider = "ngrok"', True))
    if config.streaming.enabled and provider in REAL_PROVIDERS and not config.realtime.enabled:
        # (with [realtime] on, the model listens and speaks: no STT or TTS key is needed)
        needs.append(
            _Need("streaming.api_key", "streaming speech-to-text", False, config.streaming.stt_url)
        )
        tts = config.tts
        vendor = tts_catalog.vendor(tts.provider or "")
        if vendor is not None:
            needs.append(
                _Need(
                    f"tts.{vendor.name}.api_key",
                    f"{vendor.title} TTS on media streams",
                    False,
                    getattr(tts, vendor.name).base_url,
                )
            )
    if config.response_model:
        needs.append(
            _Need(
                "agent.api_key",
                f'the auto-responder ("{config.response_model}")',
                False,
                config.agent.base_url,
            )
        )
    if realtime_in_use(config):
        needs.append(
            _Need(
                "realtime.api_key",
                "realtime voice-to-voice mode",
                not is_local_api(config.realtime.base_url),
                config.realtime.base_url,
            )
        )
    return needs


def secret_value(config: Config, key: str) -> str | None:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node if isinstance(node, str) and node else None


def check_secrets(config: Config) -> list[Check]:
    """One line per needed secret: set or not, and where from. Values are never shown."""
    needs = _needs(config)
    if not needs:
        return [
            Check(
                "secrets", "OK", f"this configuration needs no secrets (provider {config.provider})"
            )
        ]
    checks = []
    for need in needs:
        cid, var = f"secret.{need.key}", SECRET_KEYS[need.key]
        origin = config.secret_sources.get(need.key)
        store = f"`voicecall secrets set {need.key}`" + (f" or export {var}" if var else "")
        if secret_value(config, need.key) is None or origin is None:
            if need.required:
                checks.append(Check(cid, "FAIL", f"not set; {need.why} needs it", store))
            elif need.vendor_url and is_local_api(need.vendor_url):
                checks.append(
                    Check(cid, "OK", f"not set ({need.why} at {need.vendor_url} may not need one)")
                )
            else:
                checks.append(Check(cid, "WARN", f"not set; {need.why} needs it", store))
        elif origin == "env":
            checks.append(Check(cid, "OK", f"set from the environment ({var})"))
        elif origin == "keyring":
            checks.append(Check(cid, "OK", "set in the OS keyring"))
        else:
            checks.append(
                Check(
                    cid,
                    "WARN",
                    f"set in the config file {config.source}",
                    f"move it to the keyring: `voicecall secrets set {need.key}`, then remove it "
                    "from the file",
                )
            )
    return checks


# --- exposure -----------------------------------------------------------------------------------


@functools.cache
def _tailscale_host() -> tuple[str | None, str | None]:
    """This node's MagicDNS name, or the reason it cannot be had (asked once per run)."""
    from daemon.tunnels.tailscale import read_node

    try:
        node = asyncio.run(read_node("tailscale", TAILSCALE_TIMEOUT_SECONDS))
    except TunnelError as exc:
        return None, exc.message
    return node.dns_name, None


def check_exposure(config: Config) -> list[Check]:
    """Whether the provider can reach the webhook; plus signature verification when it is off."""
    checks = [_exposure(config)]
    if config.skip_signature_verification:
        exposed = (
            bool(config.public_url)
            or config.tunnel.provider != "none"
            or config.tailscale.mode != "off"
        )
        if exposed or not is_loopback_host(config.serve.bind):
            checks.append(
                Check(
                    "exposure.signatures",
                    "FAIL",
                    "skip_signature_verification = true while the webhook is not loopback-only",
                    "set skip_signature_verification = false",
                )
            )
        else:
            checks.append(
                Check(
                    "exposure.signatures",
                    "WARN",
                    "skip_signature_verification = true: webhooks are not "
                    "verified (acceptable only for local testing)",
                    "set skip_signature_verification = false",
                )
            )
    return checks


def _exposure(config: Config) -> Check:
    local = local_webhook_url(config)
    if config.provider not in REAL_PROVIDERS:
        return Check(
            "exposure", "OK", f"provider {config.provider} needs no public webhook (local: {local})"
        )
    api = provider_api_base_url(config) or ""
    if is_local_api(api) and not config.public_url:
        return Check(
            "exposure",
            "OK",
            f"the {config.provider} API ({api}) is on this machine "
            f"(a simulator): the local webhook {local} is used",
        )
    if config.public_url:
        try:
            check_public_webhook(config, config.public_url)
        except ConfigError:
            return Check(
                "exposure",
                "FAIL",
                f"public_url {config.public_url} is local-only; {config.provider} cannot reach it",
                f"publish the webhook one of three ways: {THREE_WAYS}",
            )
        return Check("exposure", "OK", f"public_url {config.public_url}")
    if config.tunnel.provider == "ngrok":
        import importlib.util

        if importlib.util.find_spec("ngrok") is None:
            return Check(
                "exposure",
                "FAIL",
                '[tunnel] provider = "ngrok" but the ngrok package is not installed',
                "pip install ngrok",
            )
        if not config.tunnel.ngrok_domain:
            return Check(
                "exposure",
                "WARN",
                "an ngrok tunnel publishes the webhook, on a "
                "random URL that changes at every daemon start",
                "reserve a domain and set tunnel.ngrok_domain",
            )
        return Check(
            "exposure",
            "OK",
            f"an ngrok tunnel publishes https://{config.tunnel.ngrok_domain}{config.serve.path}",
        )
    if config.tailscale.mode in ("serve", "funnel"):
        return _tailscale_exposure(config)
    if local.startswith("http://") and not is_local_api(local):
        return Check(
            "exposure",
            "WARN",
            f"no public_url, tunnel or Tailscale: {config.provider} "
            f"calls {local} directly, without TLS",
            f"put an https proxy in front and set public_url, or {THREE_WAYS}",
        )
    return Check(
        "exposure",
        "FAIL",
        f"no public webhook: {local} is local-only and {config.provider} calls from the internet",
        f"publish it one of three ways: {THREE_WAYS}",
    )


def _tailscale_exposure(config: Config) -> Check:
    mode = config.tailscale.mode
    host, problem = _tailscale_host()
    if host is None:
        return Check(
            "exposure",
            "FAIL",
            f'[tailscale] mode = "{mode}": {problem}',
            "start Tailscale (`tailscale up`), or choose another way: " + THREE_WAYS,
        )
    url = f"https://{host}{config.tailscale.path}"
    if config.tailscale.path.rstrip("/") != config.serve.path.rstrip("/"):
        return Check(
            "exposure",
            "FAIL",
            f"tailscale.path ({config.tailscale.path}) differs from "
            f"serve.path ({config.serve.path}): requests to {url} "
            "would get 404",
            f'set tailscale.path = "{config.serve.path}"',
        )
    if mode == "serve":
        return Check(
            "exposure",
            "WARN",
            f"tailscale serve publishes {url} inside the tailnet "
            f"only; {config.provider} cannot reach it",
            'set [tailscale] mode = "funnel"',
        )
    return Check("exposure", "OK", f"tailscale funnel publishes {url}")


def check_stream(config: Config) -> Check:
    """Whether the media-stream path is published along with the webhook."""
    from daemon.exposure import stream_url_for

    sc = config.streaming
    if not sc.enabled:
        return Check("exposure.stream", "OK", "streaming is off: no media-stream path to publish")
    path = sc.stream_path
    if path.rstrip("/") == config.serve.path.rstrip("/"):
        return Check(
            "exposure.stream",
            "FAIL",
            f"streaming.stream_path {path} is also serve.path",
            'give the stream its own path, e.g. streaming.stream_path = "/voice/stream"',
        )
    local = local_webhook_url(config)
    api = provider_api_base_url(config) or ""
    if config.provider not in REAL_PROVIDERS or (is_local_api(api) and not config.public_url):
        return Check("exposure.stream", "OK", f"media streams at {stream_url_for(config, local)}")
    if config.public_url:
        url = stream_url_for(config, config.public_url)
        return Check(
            "exposure.stream",
            "OK",
            f"{url} (derived from public_url; your proxy must "
            f"forward {path} with the websocket upgrade)",
        )
    if config.tunnel.provider == "ngrok":
        host = config.tunnel.ngrok_domain or "<ngrok host>"
        return Check("exposure.stream", "OK", f"the ngrok listener carries wss://{host}{path}")
    if config.tailscale.mode in ("serve", "funnel"):
        host = _tailscale_host()[0] or "<node>"
        return Check(
            "exposure.stream",
            "OK",
            f"tailscale {config.tailscale.mode} mounts {path} too: wss://{host}{path}",
        )
    return Check(
        "exposure.stream",
        "FAIL",
        f"{stream_url_for(config, local)} is not public",
        f"publish the webhook (see exposure): {THREE_WAYS}",
    )


# --- store --------------------------------------------------------------------------------------


def check_database(config: Config) -> Check:
    """A PostgreSQL store: reachable with these credentials, and a schema this version can use.

    Read-only (the daemon creates and migrates the schema); the driver is imported only here.
    """
    from daemon.errors import StoreError
    from daemon.store import pg_schema

    cid = "store.database"
    try:
        found = asyncio.run(pg_schema.probe(config.store, STORE_TIMEOUT_SECONDS))
    except StoreError as exc:
        return Check(cid, "FAIL", *_split(exc.message, "check the `store` URL"))
    server = f"PostgreSQL {found.server_version.split()[0]} at {config.store.display}"
    version, known = found.schema_version, found.known
    if version is None:
        return Check(
            cid,
            "OK",
            f"{server} answers; no voicecall schema yet (the daemon creates "
            f"version {known} at start)",
        )
    if version > known:
        return Check(
            cid,
            "FAIL",
            f"{server} has voicecall schema version {version}, newer than "
            f"this voicecall knows ({known})",
            "upgrade voicecall here: every daemon sharing a database must run the same version",
        )
    if version < known:
        return Check(
            cid,
            "OK",
            f"{server}: schema version {version} (the daemon migrates it to {known} at start)",
        )
    return Check(cid, "OK", f"{server}: schema version {version} (current)")


# --- daemon and port ----------------------------------------------------------------------------


def check_daemon(sock: Path, config: Config | None) -> tuple[Check, dict[str, Any] | None]:
    """Ask a running daemon for its status, without starting one; 1 s at most."""
    if not sock.exists():
        return Check("daemon", "OK", f"not running (no socket at {sock})"), None
    try:
        with RpcClient(sock, timeout=DAEMON_TIMEOUT_SECONDS) as client:
            status = client.call("daemon.status")
    except DaemonUnreachableError:
        return Check("daemon", "OK", f"not running (stale socket {sock})"), None
    except UntrustedSocketError as exc:
        message, _, fix = exc.message.partition("; ")
        return Check("daemon", "FAIL", message, fix or None), None
    except (OSError, ValueError, RpcRemoteError) as exc:
        return Check(
            "daemon",
            "WARN",
            f"{sock} did not answer daemon.status within "
            f"{DAEMON_TIMEOUT_SECONDS:g}s ({type(exc).__name__})",
            "`voicecall daemon restart`; see `voicecall daemon logs`",
        ), None
    if not isinstance(status, dict):
        return Check(
            "daemon", "WARN", f"{sock} answered daemon.status oddly", "`voicecall daemon restart`"
        ), None
    what = (
        f"running (pid {status.get('pid')}, version {status.get('version')}, provider "
        f"{status.get('provider')}, webhook {status.get('webhookUrl')})"
    )
    if config is not None and status.get("provider") != config.provider:
        return Check(
            "daemon",
            "WARN",
            f"{what}, but the config says provider {config.provider}",
            "`voicecall daemon restart` to apply the config",
        ), status
    return Check("daemon", "OK", what), status


def check_store(status: dict[str, Any]) -> Check:
    """Whether the running daemon's store accepts writes (SPEC section 6: faults of the store)."""
    store = status.get("store") or "the store"
    fault = status.get("storeFault")
    if isinstance(fault, dict):
        return Check(
            "store",
            "FAIL",
            f"{store} refuses writes since {fault.get('since')}: {fault.get('error')}; "
            "webhooks get 503 (the provider retries) and call commands fail",
            f"free disk space (or fix the disk) where {store} lives; the daemon "
            "recovers by itself at the next write",
        )
    return Check("store", "OK", f"{store} accepts writes")


def check_load(status: dict[str, Any], config: Config | None) -> Check:
    """Whether the running daemon takes new calls: its event loop's load against the
    `max_loop_load` it runs with, which the file may have changed since (docs/operations.md,
    "Overload")."""
    load = status.get("loopLoad")
    if not isinstance(load, int | float):
        return Check("load", "WARN", "the daemon does not say how busy it is", "upgrade it")
    limit = status.get("maxLoopLoad")
    if not isinstance(limit, int | float):
        limit = config.max_loop_load if config is not None else DEFAULT_MAX_LOOP_LOAD
    what = f"the daemon's event loop was {load:.0%} busy over the last 5 s"
    projected = status.get("loopLoadProjected")
    if isinstance(projected, int | float) and projected >= load + 0.005:
        what += f", {projected:.0%} counting the calls taken since"
        load = projected  # what admission judges (docs/operations.md, "Overload")
    if limit < 1 and load > limit:
        return Check(
            "load",
            "WARN",
            f"{what}, over max_loop_load {limit:g}: new calls are refused (callers hear busy), "
            "the calls up keep their voice",
            "wait, end calls, give the daemon more cores (`daemon run --workers N`), or "
            "raise max_loop_load",
        )
    return Check("load", "OK", f"{what}; new calls are taken")


def _try_bind(host: str, port: int) -> OSError | None:
    """Bind and listen like the webhook server would; the error, or None when it works."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return exc
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
                sock.listen(1)
            except OSError as exc:
                return exc
    return None


def _pid_listens_on(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds a TCP socket listening on `port` (Linux /proc); None: unknown."""
    inodes: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            fields = row.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    if not readable:
        return None
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def check_port(config: Config, daemon: dict[str, Any] | None) -> Check:
    """Whether serve.bind:serve.port can be bound (or is bound by our running daemon)."""
    bind, port = config.serve.bind, config.serve.port
    where = f"{bind}:{port}"
    if port == 0:
        return Check("port", "OK", "serve.port = 0: the daemon takes any free port at start")
    failure = _try_bind(bind, port)
    if failure is None:
        return Check("port", "OK", f"{where} is free")
    if isinstance(failure, socket.gaierror):
        return Check(
            "port",
            "FAIL",
            f"serve.bind = {bind!r} does not resolve ({failure})",
            "set serve.bind to an address of this machine, e.g. 127.0.0.1",
        )
    if failure.errno == errno.EADDRINUSE:
        pid = daemon.get("pid") if daemon else None
        if isinstance(pid, int):
            owns = _pid_listens_on(pid, port)
            if owns is not False:
                return Check("port", "OK", f"{where} is in use by the running daemon (pid {pid})")
        from daemon.config.ports import may_fall_back

        if may_fall_back(config):
            return Check(
                "port",
                "OK",
                f"{where} is in use by another program; with the mock "
                "provider and no serve.port set, the daemon listens on a "
                "free port instead",
            )
        return Check(
            "port",
            "FAIL",
            f"{where} is in use by another program",
            f"stop it (`ss -ltnp 'sport = :{port}'` shows which), or choose another "
            "port: `voicecall config set serve.port 3335` (0 = any free port)",
        )
    if failure.errno == errno.EADDRNOTAVAIL:
        return Check(
            "port",
            "FAIL",
            f"serve.bind = {bind!r} is not an address of this machine",
            "set serve.bind to 127.0.0.1 or one of this machine's addresses",
        )
    if failure.errno == errno.EACCES:
        return Check(
            "port",
            "FAIL",
            f"binding {where} needs privileges",
            "use a port >= 1024 with `voicecall config set serve.port 3334`",
        )
    return Check(
        "port",
        "FAIL",
        f"cannot bind {where}: {failure.strerror or failure}",
        "choose another serve.bind or serve.port",
    )
