"""Provider names to import strings, imported lazily (uvicorn's registry pattern)."""

from __future__ import annotations

import importlib

from daemon.errors import ConfigError
from daemon.providers.base import Provider

PROVIDERS: dict[str, str] = {
    "mock": "daemon.providers.mock:MockProvider",
    "twilio": "daemon.providers.twilio:TwilioProvider",
    "telnyx": "daemon.providers.telnyx:TelnyxProvider",
    "plivo": "daemon.providers.plivo:PlivoProvider",
}


def create_provider(name: str) -> Provider:
    """Instantiate the provider called `name`."""
    target = PROVIDERS.get(name)
    if target is None:
        raise ConfigError(f"provider = {name!r}: expected one of {', '.join(sorted(PROVIDERS))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"provider {name!r} is not available in this build ({exc.name} is missing); "
            "reinstall voicecall with `pip install voicecall`"
        ) from None
    provider: Provider = getattr(module, attr)()
    return provider
