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
from dataclasses import dataclass
from types import MappingProxyType


def _map(pairs: dict[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(pairs or {}))


# The signature headers of each vendor's webhooks (`daemon.webhooks.security` verifies them).
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
TELNYX_SIGNATURE_HEADER = "telnyx-signature-ed25519"
TELNYX_TIMESTAMP_HEADER = "telnyx-timestamp"
PLIVO_V3_SIGNATURE_HEADER = "X-Plivo-Signature-V3"
PLIVO_V3_NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
PLIVO_V2_SIGNATURE_HEADER = "X-Plivo-Signature-V2"
PLIVO_V2_NONCE_HEADER = "X-Plivo-Signature-V2-Nonce"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider's needs, as every other part of voicecall sees them.

    Every field is declared by every provider (none has a default): a new provider states each
    decision, and `tests/unit/test_provider_catalog.py` fails on one left out.
    """

    name: str
    """The `provider = "..."` value and the name of its config table."""
    factory: str
    """`module:Class` of its :class:`daemon.providers.base.Provider`, imported on use."""
    framing: str
    """The media-stream protocol it speaks, a key of :data:`daemon.media.protocols.FRAMINGS`."""
    required: tuple[str, ...]
    """Dotted config keys it cannot work without (the loader reports them as missing)."""
    secrets: Mapping[str, str]
    """Its secret config keys and the environment variable of each (env wins over file)."""
    plain_env: Mapping[str, str]
    """Plain keys with an environment fallback (the file wins over these)."""
    openclaw: Mapping[str, str]
    """OpenClaw `plugins.entries.voice-call.config` keys (camelCase) to ours."""
    auth_keys: tuple[str, ...]
    """The keys its REST API authenticates with: what a 401/403 tells the user to check."""
    api_credential: str | None
    """The credential its REST API checks: what `voicecall doctor` names when it is rejected.
    None: it has no cloud, which then never calls our webhook (see `calls_from_the_internet`)."""
    doctor_probe: str | None
    """`module:function(config) -> answer` that reaches its API for `voicecall doctor`."""
    verify_credential: str | None
    """A required secret used only to verify webhooks (not needed with signature checks off)."""
    default_from_number: str | None
    """The caller ID of a call when `from_number` is unset; None: `from_number` is required
    (a real vendor dials from a number of the account)."""
    signature_headers: tuple[tuple[str, ...], ...]
    """The header sets its signed webhooks carry: a request with every header of one set
    present and non-empty passes the pre-body gate (`has_signature_headers`); with none
    declared no webhook passes it."""
    nonce_headers: tuple[str, ...]
    """Headers whose per-delivery nonce is a further replay key of a verified delivery besides
    the verifier's own (SPEC 8.6, `replay_aliases`)."""
    stream_upgrade_signature: str | None
    """How its cloud signs the media-stream websocket upgrade, a key of
    :data:`daemon.media.server.UPGRADE_VERIFIERS`; None: the upgrade is not signed (the
    stream's `start` token is what authorises it)."""
    machine_detection_seconds: tuple[float, float] | None
    """The range its API clamps the machine-detection time to (SPEC 13); None: it takes
    `machine_detection.timeout_seconds` as configured."""

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
        verify_credential=None,  # the auth token signs webhooks and authenticates REST
        default_from_number=None,
        signature_headers=((TWILIO_SIGNATURE_HEADER,),),
        nonce_headers=(),
        # Twilio signs the `wss://` URL of a stream like a webhook (X-Twilio-Signature).
        stream_upgrade_signature="twilio",
        machine_detection_seconds=None,
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
        default_from_number=None,
        signature_headers=((TELNYX_SIGNATURE_HEADER, TELNYX_TIMESTAMP_HEADER),),
        nonce_headers=(),
        stream_upgrade_signature=None,
        machine_detection_seconds=None,
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
        verify_credential=None,  # the auth token signs webhooks and authenticates REST
        default_from_number=None,
        signature_headers=(
            (PLIVO_V3_SIGNATURE_HEADER, PLIVO_V3_NONCE_HEADER),
            (PLIVO_V2_SIGNATURE_HEADER, PLIVO_V2_NONCE_HEADER),
        ),
        # Plivo signs each callback with a V3 and a V2 pair: remembering both nonces means a
        # V2 pair lifted off a delivery that verified by V3 is caught as a replay.
        nonce_headers=(PLIVO_V3_NONCE_HEADER, PLIVO_V2_NONCE_HEADER),
        stream_upgrade_signature=None,
        # `machine_detection_time` must be 2000-10000 ms.
        machine_detection_seconds=(2.0, 10.0),
    ),
    ProviderSpec(
        name="mock",
        factory="daemon.providers.mock:MockProvider",
        # The mock speaks Twilio's stream protocol (what test clients use).
        framing="twilio",
        required=(),
        secrets=_map(),
        plain_env=_map(),
        openclaw=_map(),
        auth_keys=(),
        api_credential=None,  # no cloud: network-free
        doctor_probe=None,
        verify_credential=None,
        default_from_number="+15550000000",
        signature_headers=(),  # it sends no webhooks, so none passes the gate
        nonce_headers=(),
        stream_upgrade_signature=None,
        machine_detection_seconds=None,
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
