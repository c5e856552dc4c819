"""How a provider's refused REST request becomes our error: in one place for every provider.

A 401/403 (or the vendor's own "authenticate" code) is a :class:`ProviderAuthError` that names
the keys to check (from the provider's declaration); anything else is a
:class:`ProviderRequestError`. Messages carry the HTTP status and vendor codes, never a secret.
"""

from __future__ import annotations

from daemon.errors import ProviderAuthError, ProviderError, ProviderRequestError
from daemon.providers.catalog import spec

AUTH_STATUSES = (401, 403)


def refusal(
    provider: str, message: str, status: int, *, auth_failed: bool = False, **details: object
) -> ProviderError:
    """The error for `provider` answering `status` to a request described by `message`."""
    if status in AUTH_STATUSES or auth_failed:
        declared = spec(provider)
        keys = " and ".join(declared.auth_keys) if declared and declared.auth_keys else ""
        hint = f"; check {keys}" if keys else ""
        return ProviderAuthError(message + hint, status=status, **details)
    return ProviderRequestError(message, status=status, **details)
