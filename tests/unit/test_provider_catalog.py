"""Each provider is declared once (`daemon/providers/catalog.py`); everything that used to keep
its own per-provider list reads the declaration (issue 14). These tests check that every
declaration is complete and points at real things, so a new provider's mistakes surface here."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from daemon.config import openclaw, schema
from daemon.config.exposure import provider_api_base_url
from daemon.config.loader import REQUIRED
from daemon.config.model import Config
from daemon.config.secrets import NON_SECRET_ENV, SECRET_KEYS
from daemon.media.protocols import FRAMINGS, framing_for
from daemon.providers import catalog
from daemon.providers.registry import PROVIDERS


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def test_every_declaration_points_at_real_code_and_real_keys() -> None:
    leaves = dict(schema.leaf_paths())
    for spec in catalog.SPECS:
        provider_cls = _load(spec.factory)
        assert getattr(provider_cls, "name", None) == spec.name or provider_cls().name == spec.name
        assert spec.framing in FRAMINGS
        for key in (*spec.required, *spec.secrets, *spec.plain_env, *spec.openclaw.values()):
            assert key in leaves, f"{spec.name}: {key} is not a config key"
        assert set(spec.secrets) <= set(spec.required) | {spec.verify_credential}
        if spec.doctor_probe is not None:
            assert callable(_load(spec.doctor_probe))
        if spec.calls_from_the_internet:
            assert spec.api_credential in spec.secrets
            assert spec.doctor_probe is not None
            assert f"{spec.name}.api_base_url" in leaves


def test_a_declaration_missing_a_field_fails() -> None:
    """No `ProviderSpec` field has a default: each provider states every decision (a new field
    must be declared by all of them), and leaving one out is an error at import."""
    fields = dataclasses.fields(catalog.ProviderSpec)
    assert [f.name for f in fields if f.default is not dataclasses.MISSING] == []
    assert [f.name for f in fields if f.default_factory is not dataclasses.MISSING] == []
    for spec in catalog.SPECS:
        given = {f.name: getattr(spec, f.name) for f in fields}
        assert catalog.ProviderSpec(**given) == spec
        for left_out in given:
            partial = {k: v for k, v in given.items() if k != left_out}
            with pytest.raises(TypeError, match=left_out):
                catalog.ProviderSpec(**partial)


def test_the_per_provider_decisions_are_read_from_the_declarations() -> None:
    """Signature headers, replay nonces, the stream upgrade verifier, machine-detection timing
    and the default caller ID are what each declaration says, nothing hand-kept elsewhere."""
    from daemon.config.model import MachineDetectionConfig
    from daemon.media.server import UPGRADE_VERIFIERS
    from daemon.providers.machine import decision_seconds
    from daemon.webhooks.security import has_signature_headers, replay_aliases

    for spec in catalog.SPECS:
        every_header = {h for names in spec.signature_headers for h in names}
        # a cloud that calls our webhook signs it; the gate passes exactly the declared sets
        assert bool(spec.signature_headers) == spec.calls_from_the_internet
        for names in spec.signature_headers:
            assert has_signature_headers(spec.name, CIMultiDict({h: "x" for h in names}))
            for missing in names:  # one header short of every declared set
                partial = CIMultiDict({h: "x" for h in names if h != missing})
                assert not has_signature_headers(spec.name, partial)
        assert not has_signature_headers(spec.name, CIMultiDict())
        assert set(spec.nonce_headers) <= every_header
        nonces = CIMultiDict({h: f"nonce-{i}" for i, h in enumerate(spec.nonce_headers)})
        aliases = replay_aliases(spec.name, "https://vc.example.com/voice/webhook?a=1", nonces)
        assert len(aliases) == len(spec.nonce_headers)
        assert all(a.startswith(f"{spec.name}:nonce:") for a in aliases)
        if spec.stream_upgrade_signature is not None:
            assert spec.stream_upgrade_signature in UPGRADE_VERIFIERS
        bounds = spec.machine_detection_seconds
        long_wait = MachineDetectionConfig(timeout_seconds=3600)
        if bounds is None:
            assert decision_seconds(spec.name, long_wait) == 3600.0
        else:
            assert 0 < bounds[0] <= bounds[1]
            assert decision_seconds(spec.name, long_wait) == bounds[1]
        if spec.default_from_number is not None:
            assert not spec.calls_from_the_internet  # a real vendor dials from the account's number
            assert re.fullmatch(r"\+[1-9]\d{1,14}", spec.default_from_number)


def test_the_rest_of_voicecall_reads_the_declarations() -> None:
    assert tuple(PROVIDERS) == catalog.NAMES
    provider_key = schema.lookup("provider")
    assert isinstance(provider_key, schema.Key)
    for name in catalog.NAMES:
        assert provider_key.check(name) == name
        assert framing_for(name) is not None
    assert {n: k for n, k in REQUIRED.items()} == {
        s.name: s.required for s in catalog.SPECS if s.required
    }
    for spec in catalog.SPECS:
        for key, var in spec.secrets.items():
            assert SECRET_KEYS[key] == var
        for key, var in spec.plain_env.items():
            assert NON_SECRET_ENV[key] == var
        for theirs, ours in spec.openclaw.items():
            assert openclaw._SIMPLE[theirs] == ours
    assert catalog.REAL_PROVIDERS == ("twilio", "telnyx", "plivo")


def test_api_base_url_comes_from_the_providers_own_table() -> None:
    base = Config.defaults(Path("/nonexistent"))
    assert provider_api_base_url(base) is None  # mock
    for spec in catalog.SPECS:
        if spec.calls_from_the_internet:
            config = Config(store=base.store, provider=spec.name)
            assert provider_api_base_url(config) == getattr(config, spec.name).api_base_url


def test_no_module_outside_the_catalog_lists_the_providers() -> None:
    """The old hand-kept lists (registry, REQUIRED, REAL_PROVIDERS, the doctor's API secrets and
    its `else:` that took any provider for Plivo) are gone: only `catalog.py` names all three."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("daemon", "voicecall_cli"):
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "catalog.py":
                continue
            text = path.read_text(encoding="utf-8")
            if all(f'"{name}"' in text for name in ("twilio", "telnyx", "plivo")):
                offenders.append(str(path.relative_to(root)))
    # What remains is per-provider code, not a list: each one's config table (schema) and
    # stream framing (protocols). The signature schemes (security) read their header sets and
    # replay nonces from the declarations.
    assert offenders == [
        "daemon/config/schema.py",
        "daemon/media/protocols.py",
    ]


def test_a_refusal_is_mapped_the_same_way_for_every_provider() -> None:
    from daemon.errors import ProviderAuthError, ProviderRequestError
    from daemon.providers.refusal import refusal

    for spec in catalog.SPECS:
        if not spec.calls_from_the_internet:
            continue
        for status in (401, 403):
            error = refusal(spec.name, f"{spec.name} POST /x failed", status)
            assert isinstance(error, ProviderAuthError)
            assert error.message.endswith("; check " + " and ".join(spec.auth_keys))
            assert error.details["status"] == status
        error = refusal(spec.name, f"{spec.name} POST /x failed", 500)
        assert type(error) is ProviderRequestError
        assert error.message == f"{spec.name} POST /x failed"
    assert isinstance(refusal("twilio", "m", 400, auth_failed=True), ProviderAuthError)


def test_tts_vendors_are_declared_once_and_read_everywhere() -> None:
    from daemon.speech.tts import catalog as tts_catalog
    from daemon.speech.tts.factory import PROVIDERS as TTS_PROVIDERS

    leaves = dict(schema.leaf_paths())
    provider_key = schema.lookup("tts.provider")
    assert isinstance(provider_key, schema.Key)
    assert TTS_PROVIDERS == tts_catalog.NAMES
    for vendor in tts_catalog.VENDORS:
        assert callable(_load(vendor.factory))
        assert provider_key.check(vendor.name) == vendor.name
        for prefix in ("tts.", "messages.tts."):
            key = f"{prefix}{vendor.name}.api_key"
            assert key in leaves and SECRET_KEYS[key] == vendor.env_var
        assert f"tts.{vendor.name}.base_url" in leaves
    root = Path(__file__).resolve().parents[2]
    listing = [
        str(p.relative_to(root))
        for p in sorted((root / "daemon").rglob("*.py"))
        if '"openai", "elevenlabs"' in p.read_text(encoding="utf-8")
    ]
    assert listing == []
