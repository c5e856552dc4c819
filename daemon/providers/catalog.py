"""What each telephony provider needs, declared once (issue 14).

Config loading, secrets, exposure checks, OpenClaw import, media-stream framing, `voicecall
doctor` and the provider registry all read these declarations instead of keeping their own
per-provider lists. Adding a provider means: its module under `daemon/providers/`, one
:class:`ProviderSpec` here, and its `[name]` table in `daemon/config/model.py` + `schema.py`
(docs/architecture.md walks through it).

Stdlib only and free of provider code: the CLI imports it, and a provider's SDK is imported only
when the daemon starts that provider (:mod:`daemon.providers.registry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


def _map(pairs: dict[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(pairs or {}))


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider's needs, as every other part of voicecall sees them."""

    name: str
    """The `provider = "..."` value and the name of its config table."""
    factory: str
    """`module:Class` of its :class:`daemon.providers.base.Provider`, imported on use."""
    framing: str
    """The media-stream protocol it speaks, a key of :data:`daemon.media.protocols.FRAMINGS`."""
    required: tuple[str, ...] = ()
    """Dotted config keys it cannot work without (the loader reports them as missing)."""
    secrets: Mapping[str, str] = field(default_factory=_map)
    """Its secret config keys and the environment variable of each (env wins over file)."""
    plain_env: Mapping[str, str] = field(default_factory=_map)
    """Plain keys with an environment fallback (the file wins over these)."""
    openclaw: Mapping[str, str] = field(default_factory=_map)
    """OpenClaw `plugins.entries.voice-call.config` keys (camelCase) to ours."""
    auth_keys: tuple[str, ...] = ()
    """The keys its REST API authenticates with: what a 401/403 tells the user to check."""
    api_credential: str | None = None
    """The credential its REST API checks: what `voicecall doctor` names when it is rejected."""
    doctor_probe: str | None = None
    """`module:function(config) -> answer` that reaches its API for `voicecall doctor`."""
    verify_credential: str | None = None
    """A required secret used only to verify webhooks (not needed with signature checks off)."""

    @property
    def calls_from_the_internet(self) -> bool:
        """Whether its cloud calls our webhook, so the webhook URL must be public (exposure)."""
        return self.api_credential is not None

    @property
    def api_credentials(self) -> tuple[str, ...]:
        """The required keys its REST API needs (those `voicecall doctor` must have)."""
        return tuple(k for k in self.required if k != self.verify_credential)


SPECS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        name="twilio",
        factory="daemon.providers.twilio:TwilioProvider",
        framing="twilio",
        required=("twilio.account_sid", "twilio.auth_token"),
        secrets=_map({"twilio.auth_token": "TWILIO_AUTH_TOKEN"}),
        # TWILIO_FROM_NUMBER is Twilio's caller ID only: read when provider = "twilio".
        plain_env=_map(
            {"twilio.account_sid": "TWILIO_ACCOUNT_SID", "from_number": "TWILIO_FROM_NUMBER"}
        ),
        openclaw=_map(
            {
                "twilio.accountSid": "twilio.account_sid",
                "twilio.authToken": "twilio.auth_token",
                "twilio.region": "twilio.region",
            }
        ),
        auth_keys=("twilio.account_sid", "twilio.auth_token"),
        api_credential="twilio.auth_token",
        doctor_probe="voicecall_cli.doctor_api:probe_twilio",
    ),
    ProviderSpec(
        name="telnyx",
        factory="daemon.providers.telnyx:TelnyxProvider",
        framing="telnyx",
        required=("telnyx.api_key", "telnyx.connection_id", "telnyx.public_key"),
        secrets=_map(
            {"telnyx.api_key": "TELNYX_API_KEY", "telnyx.public_key": "TELNYX_PUBLIC_KEY"}
        ),
        plain_env=_map({"telnyx.connection_id": "TELNYX_CONNECTION_ID"}),
        openclaw=_map(
            {
                "telnyx.apiKey": "telnyx.api_key",
                "telnyx.connectionId": "telnyx.connection_id",
                "telnyx.publicKey": "telnyx.public_key",
            }
        ),
        auth_keys=("telnyx.api_key",),
        api_credential="telnyx.api_key",
        doctor_probe="voicecall_cli.doctor_api:probe_telnyx",
        verify_credential="telnyx.public_key",
    ),
    ProviderSpec(
        name="plivo",
        factory="daemon.providers.plivo:PlivoProvider",
        framing="plivo",
        required=("plivo.auth_id", "plivo.auth_token"),
        secrets=_map({"plivo.auth_token": "PLIVO_AUTH_TOKEN"}),
        plain_env=_map({"plivo.auth_id": "PLIVO_AUTH_ID"}),
        openclaw=_map({"plivo.authId": "plivo.auth_id", "plivo.authToken": "plivo.auth_token"}),
        auth_keys=("plivo.auth_id", "plivo.auth_token"),
        api_credential="plivo.auth_token",
        doctor_probe="voicecall_cli.doctor_api:probe_plivo",
    ),
    ProviderSpec(
        name="mock",
        factory="daemon.providers.mock:MockProvider",
        # The mock speaks Twilio's stream protocol (what test clients use).
        framing="twilio",
    ),
)
"""Every provider, in the order docs and listings show them."""

BY_NAME: Mapping[str, ProviderSpec] = MappingProxyType({s.name: s for s in SPECS})
NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
REAL_PROVIDERS: tuple[str, ...] = tuple(s.name for s in SPECS if s.calls_from_the_internet)
"""Providers whose cloud must reach our webhook (all but `mock`)."""


def spec(name: str) -> ProviderSpec | None:
    """The declaration of provider `name`; None for a name no provider has."""
    return BY_NAME.get(name)
