"""Provider names to import strings, imported lazily (uvicorn's registry pattern)."""

from __future__ import annotations

import importlib

from daemon.errors import ConfigError
from daemon.providers.base import Provider
from daemon.providers.catalog import SPECS

PROVIDERS: dict[str, str] = {spec.name: spec.factory for spec in SPECS}
"""Provider names to `module:Class`, from the declarations in :mod:`daemon.providers.catalog`."""


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
