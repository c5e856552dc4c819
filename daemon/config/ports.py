"""The webhook port rule of SPEC section 2: when a busy default port may fall back.

With the `mock` provider and no `serve.port` in the config file, a busy default port (3334,
say another voicecall home's daemon) falls back to any free port, so that a second home on the
same machine works out of the box. A real provider keeps the port it was given or defaults to:
its webhook URL is registered with the carrier, so a silently different port would break
inbound calls; there a busy port stays an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.config.loader import read_document
from daemon.errors import ConfigError
from daemon.providers.catalog import REAL_PROVIDERS

if TYPE_CHECKING:
    from daemon.config.model import Config


def port_was_given(config: Config) -> bool:
    """Whether the config file sets `serve.port` (an unreadable file counts as yes: strict)."""
    if config.source is None:
        return False
    try:
        data = read_document(config.source)
    except ConfigError:
        return True
    serve = (data or {}).get("serve")
    return isinstance(serve, dict) and "port" in serve


def may_fall_back(config: Config) -> bool:
    """Whether a busy `serve.port` may be replaced by any free port: only for a provider whose
    cloud never calls the webhook (the mock; no one was told the port), when the port is the
    default rather than one the user chose."""
    return (
        config.provider not in REAL_PROVIDERS
        and config.serve.port != 0
        and not port_was_given(config)
    )
