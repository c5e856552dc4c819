"""`voicecall doctor`: can the provider's API be reached with the configured credentials?

Kept apart from the other checks because it is the only one that talks to the network; the SDK
and HTTP client are imported inside the probes.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from daemon.config.exposure import provider_api_base_url
from daemon.config.model import Config
from daemon.providers import catalog
from voicecall_cli.doctor_checks import Check, secret_value

API_TIMEOUT_SECONDS = 5.0
"""How long each provider API probe may take."""


# --- provider API -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int | None
    error: str | None = None
    detail: str = ""


def check_provider_api(config: Config, *, offline: bool) -> Check:
    """Reach the provider's REST API with the configured credentials (5 s)."""
    provider = config.provider
    declared = catalog.spec(provider)
    if declared is None or declared.doctor_probe is None or declared.api_credential is None:
        return Check("provider.api", "OK", f"provider {provider} has no API to reach")
    if offline:
        return Check("provider.api", "OK", "not checked (--offline)")
    base = provider_api_base_url(config) or ""
    unset = [k for k in declared.api_credentials if secret_value(config, k) is None]
    if unset:
        return Check(
            "provider.api",
            "WARN",
            f"not checked: {', '.join(unset)} not set",
            "set the credentials (see above), then run `voicecall doctor` again",
        )
    module, _, name = declared.doctor_probe.partition(":")
    probe: Callable[[Config], _Answer] = getattr(importlib.import_module(module), name)
    answer = probe(config)
    where = f"{provider} API {base}"
    if answer.status is None:
        return Check(
            "provider.api",
            "FAIL",
            f"{where}: {answer.error}",
            f"check the network and {provider}.api_base_url; `voicecall doctor "
            "--offline` skips this check",
        )
    if answer.status in (401, 403):
        return Check(
            "provider.api",
            "FAIL",
            f"{where}: credentials rejected (HTTP {answer.status})",
            f"store the right ones: `voicecall secrets set {declared.api_credential}`",
        )
    if not 200 <= answer.status < 300:
        return Check(
            "provider.api",
            "FAIL",
            f"{where} answered HTTP {answer.status}"
            + (f": {answer.detail}" if answer.detail else ""),
            f"check {provider}.api_base_url and the account in the provider's console",
        )
    return Check("provider.api", "OK", f"{where}: credentials accepted" + answer.detail)


def probe_telnyx(config: Config) -> _Answer:
    """GET `/balance` with the API key (Bearer)."""
    base = config.telnyx.api_base_url.rstrip("/")
    return _probe_http(f"{base}/balance", {"Authorization": f"Bearer {config.telnyx.api_key}"})


def probe_plivo(config: Config) -> _Answer:
    """GET our own Account with auth id and token (Basic)."""
    base = config.plivo.api_base_url.rstrip("/")
    pair = f"{config.plivo.auth_id}:{config.plivo.auth_token}".encode()
    return _probe_http(
        f"{base}/Account/{config.plivo.auth_id}/",
        {"Authorization": "Basic " + base64.b64encode(pair).decode()},
    )


def probe_twilio(config: Config) -> _Answer:
    """Fetch our own Account through the twilio SDK, on `twilio.api_base_url`."""
    import requests
    from twilio.base.exceptions import TwilioRestException
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    sid, base = config.twilio.account_sid, config.twilio.api_base_url.rstrip("/")
    client = Client(
        sid,
        config.twilio.auth_token,
        region=config.twilio.region,
        http_client=TwilioHttpClient(timeout=API_TIMEOUT_SECONDS),
    )
    if base != "https://api.twilio.com":
        # A custom endpoint (a simulator, a proxy) is used as given: the SDK would otherwise
        # rewrite its host for TWILIO_REGION/TWILIO_EDGE.
        client.region = client.edge = None
    client.api.base_url = base  # the Domain prefixes every Api request with this
    try:
        account = client.api.v2010.accounts(sid).fetch()
    except TwilioRestException as exc:
        return _Answer(exc.status, detail=str(exc.msg or "")[:200])
    except requests.exceptions.Timeout:
        return _Answer(None, f"unreachable (no answer within {API_TIMEOUT_SECONDS:g}s)")
    except requests.exceptions.RequestException as exc:
        return _Answer(None, f"unreachable ({_reason(exc)})")
    except ValueError:  # not JSON: whatever answered is not a Twilio API
        return _Answer(None, "the answer is not a Twilio API response")
    state = getattr(account, "status", None)
    return _Answer(200, detail=f" (account {sid}" + (f", {state})" if state else ")"))


def _probe_http(url: str, headers: dict[str, str]) -> _Answer:
    """One GET with a deadline; the status code, or why there was none."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return _Answer(None, f"{url} is not an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, headers={"Accept": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_SECONDS) as response:  # noqa: S310
            return _Answer(int(response.status))
    except urllib.error.HTTPError as exc:
        return _Answer(exc.code)
    except urllib.error.URLError as exc:
        return _Answer(None, f"unreachable ({_reason(exc.reason)})")
    except TimeoutError:
        return _Answer(None, f"unreachable (no answer within {API_TIMEOUT_SECONDS:g}s)")
    except OSError as exc:
        return _Answer(None, f"unreachable ({_reason(exc)})")


def _reason(exc: BaseException | str) -> str:
    """A short reason for a failed connection ("Connection refused"), without URLs or secrets."""
    if isinstance(exc, str):
        return exc
    node: object = exc
    for _ in range(8):  # requests -> urllib3 MaxRetryError -> NewConnectionError -> OSError
        if isinstance(node, OSError) and node.strerror:
            return node.strerror
        if not isinstance(node, BaseException):
            break
        inner = node.args[0] if node.args else None
        node = (
            node.__cause__
            or node.__context__
            or getattr(node, "reason", None)
            or (inner if isinstance(inner, BaseException) else None)
        )
    return type(exc).__name__


# --- realtime API -------------------------------------------------------------------------------


def check_realtime_api(config: Config, *, offline: bool) -> Check:
    """Realtime mode: the URL is sane, streaming is on, and the model's websocket accepts the
    key (an upgrade handshake: 101 = accepted, 401/403 = key refused)."""
    from daemon.config.exposure import is_local_api
    from daemon.realtime.settings import realtime_url

    rt = config.realtime
    url = realtime_url(rt.base_url, rt.model)
    if not config.streaming.enabled:
        return Check(
            "realtime.api",
            "FAIL",
            "realtime.enabled = true but streaming is off, so no call is bridged to the model",
            "set streaming.enabled = true",
        )
    if url.startswith("ws://") and not is_local_api(url):
        return Check(
            "realtime.api",
            "FAIL",
            f"realtime.base_url {rt.base_url} is plain ws:// to "
            "a remote host: the key and the call audio would travel unencrypted",
            "use a wss:// URL",
        )
    if offline:
        return Check("realtime.api", "OK", f"{rt.base_url} not checked (--offline)")
    if not rt.api_key and not is_local_api(url):
        return Check(
            "realtime.api",
            "WARN",
            "not checked: realtime.api_key is not set",
            "set it (see above), then run `voicecall doctor` again",
        )
    status, error = _probe_websocket(url, rt.api_key)
    where = f"realtime model {rt.model} at {rt.base_url}"
    if status is None:
        return Check(
            "realtime.api",
            "FAIL",
            f"{where}: {error}",
            "check the network and realtime.base_url; `voicecall doctor --offline` "
            "skips this check",
        )
    if status == 101:
        return Check("realtime.api", "OK", f"{where}: the websocket accepts the key")
    if status in (401, 403):
        return Check(
            "realtime.api",
            "FAIL",
            f"{where}: the key was refused (HTTP {status})",
            "check realtime.api_key (or OPENAI_API_KEY)",
        )
    return Check(
        "realtime.api",
        "FAIL",
        f"{where}: the websocket upgrade got HTTP {status}",
        "check realtime.base_url and realtime.model",
    )


def _probe_websocket(url: str, key: str | None) -> tuple[int | None, str | None]:
    """The status of a websocket upgrade request to ``url`` (stdlib only: the CLI stays light)."""
    import http.client
    import os
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    conn_class = http.client.HTTPSConnection if secure else http.client.HTTPConnection
    conn = conn_class(host, parts.port, timeout=API_TIMEOUT_SECONDS)
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    if key:
        headers["Authorization"] = f"Bearer {key}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, _reason(exc)
    finally:
        conn.close()
