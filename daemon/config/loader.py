"""Load the config file into a :class:`Config`: check, fill defaults, resolve env and secrets.

Problems come in two kinds. `errors` are values that are wrong (a bad port, an unknown key, an
unsafe combination): the file must change. `missing` are values a provider needs that are set
nowhere yet (credentials, caller ID): `config set` still writes a file with such gaps, so that a
user can fill them in any order, but the daemon refuses to start with either kind. All problems
are collected and reported at once.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast, get_type_hints

from daemon.config import schema
from daemon.config.exposure import (
    check_public_webhook,
    is_loopback_host,
    local_webhook_url,
)
from daemon.config.model import Config, NumberConfig, TtsConfig
from daemon.config.secrets import NON_SECRET_ENV, SECRET_KEYS, resolve_secrets
from daemon.errors import ConfigError
from daemon.paths import Paths
from daemon.providers.catalog import REAL_PROVIDERS, SPECS, spec
from daemon.speech.tts import catalog as tts_catalog
from daemon.store.location import StoreKind, StoreLocation, is_postgres_url

REQUIRED: dict[str, tuple[str, ...]] = {s.name: s.required for s in SPECS if s.required}
"""The settings each real provider cannot work without (from its declaration)."""

_ENV_OWNER: dict[str, str] = {key: s.name for s in SPECS for key in s.plain_env}
"""The provider that declared each plain environment fallback; one outside its own table
(`from_number`) applies only while that provider is selected."""


@dataclass(frozen=True, slots=True)
class Report:
    """What checking a config document found."""

    errors: tuple[str, ...] = ()
    """Wrong values: unknown keys, bad types or ranges, unsafe combinations."""
    missing: tuple[str, ...] = ()
    """What the selected provider needs and is not set anywhere (file, env, keyring): caller
    ID, credentials, a public webhook URL."""
    warnings: tuple[str, ...] = ()
    """Allowed, but probably not what was meant."""

    @property
    def problems(self) -> tuple[str, ...]:
        """Everything that stops the daemon from starting."""
        return self.errors + self.missing


def read_document(path: Path) -> dict[str, Any] | None:
    """Parse the TOML file; None when it does not exist (which is valid: all defaults).

    Raises:
        ConfigError: the file cannot be read or is not valid TOML.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: it is not UTF-8 text (byte "
            f"{exc.start + 1}); save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_syntax_message(path, text, str(exc))) from None


_WHERE = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")
_KEY_TUPLE = re.compile(r"\(((?:'[^']*',?\s*)+)\)")


def toml_syntax_message(path: Path, text: str, error: str) -> str:
    """One clear sentence for a TOML syntax error: where (line, column, the line itself), what,
    and the fix. Shared by the daemon, `config validate` and `config set/unset`."""
    where = _WHERE.search(error)
    reason = error[: where.start()] if where else error
    # tomllib names keys as Python tuples: ('serve',) -> [serve]
    reason = _KEY_TUPLE.sub(
        lambda m: "[" + ".".join(re.findall(r"'([^']*)'", m.group(1))) + "]", reason
    )
    reason = reason.replace("Cannot declare", "the table").replace(" twice", " is declared twice")
    reason = reason.replace("Cannot overwrite a value", "this key is already set above")
    lines = text.splitlines()
    if where and where.group(1):
        line_no, column = int(where.group(1)), int(where.group(2))
    else:  # at the end of the document
        line_no, column = max(1, len(lines)), len(lines[-1]) + 1 if lines else 1
    shown = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else ""
    context = f" (`{shown}`)" if shown else ""
    return (
        f"{path} is not valid TOML at line {line_no}, column {column}{context}: "
        f"{reason[:1].lower()}{reason[1:]}; fix that line, or start over with "
        "`voicecall config init --force`"
    )


def load_config(
    paths: Paths, env: Mapping[str, str] | None = None, *, use_keyring: bool = True
) -> Config:
    """Read, check and resolve the config file at `paths.config` (missing file = defaults).

    Raises:
        ConfigError: with one entry in `problems` per problem found.
    """
    data = read_document(paths.config)
    source = paths.config if data is not None else None
    config, report = check_document(data or {}, paths, env, use_keyring=use_keyring, source=source)
    if config is None or report.problems:
        count = len(report.problems)
        where = source or "the defaults"
        message = f"{where}: {count} problem{'s' if count != 1 else ''} in the configuration"
        raise ConfigError(message, problems=list(report.problems))
    return config


def check_document(
    data: Mapping[str, Any],
    paths: Paths,
    env: Mapping[str, str] | None = None,
    *,
    use_keyring: bool = True,
    source: Path | None = None,
) -> tuple[Config | None, Report]:
    """Check a parsed document and build the effective config.

    Returns:
        The config (None when there are `errors`; present when values are only `missing`) and
        the report.
    """
    env = os.environ if env is None else env
    errors: list[str] = []
    checked = schema.check_table(data, errors)
    numbers = checked.pop("numbers", {})
    flat = _flatten(checked)
    _apply_env_fallbacks(flat, env, errors)
    sources = _apply_secrets(flat, env, use_keyring, errors)
    bad = {problem.split(" = ", 1)[0] for problem in errors}
    tree = _unflatten(flat)
    core = tree.pop("messages", {}).get("tts", {})
    tree["tts"] = schema.deep_merge(core, tree.get("tts", {}))
    values = schema.with_defaults(tree)
    del values["messages"]
    values["store"] = _store_location(values["store"], paths, source, env, errors)
    config = _build(Config, values)
    config = dataclasses.replace(
        config,
        source=source,
        secret_sources=MappingProxyType(sources),
        numbers=_numbers(numbers, tree["tts"]),
    )
    missing: list[str] = []
    warnings: list[str] = []
    _check_semantics(config, bad, errors, missing, warnings)
    report = Report(tuple(errors), tuple(missing), tuple(warnings))
    if errors:
        return None, report
    return dataclasses.replace(config, warnings=report.warnings), report


def _numbers(checked: Mapping[str, Any], call_tts: Mapping[str, Any]) -> Mapping[str, NumberConfig]:
    """The `[numbers."+E164"]` tables, each with its effective TTS (deep-merged over the call
    TTS, API keys included: the override itself cannot hold any)."""
    out: dict[str, NumberConfig] = {}
    for key, table in checked.items():
        tts = dict(table.get("tts") or {})
        effective = None
        if tts:
            merged = schema.with_defaults(
                schema.deep_merge(call_tts, tts), cast(schema.Table, schema.SCHEMA.keys["tts"])
            )
            effective = _build(TtsConfig, merged)
        out[key] = NumberConfig(
            inbound_greeting=table.get("inbound_greeting"),
            response_model=table.get("response_model"),
            response_system_prompt=table.get("response_system_prompt"),
            response_timeout_ms=table.get("response_timeout_ms"),
            tts=MappingProxyType(tts),
            realtime=MappingProxyType(dict(table.get("realtime") or {})),
            effective_tts=effective,
        )
    return MappingProxyType(out)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _apply_env_fallbacks(flat: dict[str, Any], env: Mapping[str, str], errors: list[str]) -> None:
    """Fill unset plain settings from their environment variables (the file wins)."""
    for key, var in NON_SECRET_ENV.items():
        value = env.get(var, "").strip()
        if not value or flat.get(key) is not None:
            continue
        owner = _ENV_OWNER[key]
        if not key.startswith(f"{owner}.") and flat.get("provider", "mock") != owner:
            continue  # TWILIO_FROM_NUMBER is Twilio's caller ID, not everybody's
        checked = _check_external(key, value, f"from {var}", errors)
        if checked is not None:
            flat[key] = checked


def _apply_secrets(
    flat: dict[str, Any], env: Mapping[str, str], use_keyring: bool, errors: list[str]
) -> dict[str, str]:
    """Resolve every secret (env, file, keyring) into `flat`; return where each came from."""
    file_values = {key: flat.get(key) for key in SECRET_KEYS}
    for vendor in tts_catalog.NAMES:  # the file's effective call TTS key
        file_values[f"tts.{vendor}.api_key"] = flat.get(f"tts.{vendor}.api_key") or flat.get(
            f"messages.tts.{vendor}.api_key"
        )
    resolved = resolve_secrets(file_values, env, use_keyring=use_keyring)
    sources: dict[str, str] = {}
    for key, (value, origin) in resolved.items():
        if origin != "file" and _check_external(key, value, f"from {origin}", errors) is None:
            continue
        flat[key] = value
        sources[key] = origin
    for vendor in tts_catalog.NAMES:
        call_key, core_key = f"tts.{vendor}.api_key", f"messages.tts.{vendor}.api_key"
        if call_key not in sources and core_key in sources:
            flat[call_key] = flat[core_key]
            sources[call_key] = sources[core_key]
    return sources


def _check_external(key: str, value: str, origin: str, errors: list[str]) -> Any:
    node = schema.lookup(key)
    assert isinstance(node, schema.Key)
    try:
        return node.check(value)
    except schema.Invalid as exc:
        shown = schema.show(value, secret=key in SECRET_KEYS)
        errors.append(f"{key} = {shown} ({origin}): expected {exc}")
        return None


STORE_ENV = "VOICECALL_STORE"
"""Overrides the `store` key (like VOICECALL_SOCKET overrides the socket): a deployment can keep
the database URL, and its password, out of the config file."""


def _store_location(
    value: str | None, paths: Paths, source: Path | None, env: Mapping[str, str], errors: list[str]
) -> StoreLocation:
    """The effective store: VOICECALL_STORE, else the `store` key, else the state folder.

    A relative folder in the file is relative to the file; in the environment, to the current
    directory (where the variable was set).
    """
    base = (source or paths.config).parent
    override = env.get(STORE_ENV, "").strip()
    if override:
        checked = _check_external("store", override, f"from {STORE_ENV}", errors)
        if checked is not None:
            value, base = checked, Path.cwd()
    if not value:
        return StoreLocation.sqlite(paths.state)
    if is_postgres_url(value):
        return StoreLocation.postgres(value)
    path = Path(value).expanduser()
    if not path.is_absolute():  # relative to the config file, not to wherever we were started
        path = base / path
    return StoreLocation.sqlite(path)


def _build(cls: type[Any], values: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        hint = hints[f.name]
        value = values[f.name]
        if (
            isinstance(hint, type)
            and dataclasses.is_dataclass(hint)
            and not isinstance(value, hint)
        ):
            value = _build(hint, value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _check_semantics(
    config: Config, bad: set[str], errors: list[str], missing: list[str], warnings: list[str]
) -> None:
    """The rules that span several keys: what a provider needs, what is safe to combine."""
    declared = spec(config.provider)
    if "provider" not in bad and declared is not None:
        if (
            config.from_number is None
            and declared.default_from_number is None
            and "from_number" not in bad
        ):
            var = declared.plain_env.get("from_number")
            extra = f" or the {var} environment variable" if var else ""
            missing.append(
                f'from_number is not set: provider "{config.provider}" places calls '
                "from it; set it with `voicecall config set from_number +15550001234`" + extra
            )
        verify_key = declared.verify_credential
        for key in REQUIRED.get(config.provider, ()):
            if key == verify_key and config.skip_signature_verification:
                continue
            if key not in bad and _get(config, key) is None:
                missing.append(_missing_message(config.provider, key))
    _check_skip_signature(config, errors)
    _check_workers(config, bad, errors)
    _check_exposure(config, bad, missing, warnings)
    _warnings(config, warnings)


def _get(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _missing_message(provider: str, key: str) -> str:
    table, name = key.rsplit(".", 1)
    if key in SECRET_KEYS:
        return (
            f'{key} is not set: provider "{provider}" needs it; store it in the keyring with '
            f"`voicecall secrets set {key}`, or set the {SECRET_KEYS[key]} environment "
            f"variable, or {name} under [{table}] in the config file"
        )
    return (
        f'{key} is not set: provider "{provider}" needs it; set it with '
        f"`voicecall config set {key} VALUE` or the {NON_SECRET_ENV[key]} environment "
        "variable"
    )


def _check_workers(config: Config, bad: set[str], errors: list[str]) -> None:
    if "serve.workers" not in bad and (problem := check_workers(config)):
        errors.append(problem)


def check_workers(config: Config) -> str | None:
    """What is wrong with `serve.workers` (or `--workers`) above 1, or None.

    Workers are daemons of one cluster: they need the shared PostgreSQL store (SQLite is one
    daemon's), and one tunnel for all of them (each worker would open its own).
    """
    workers = config.serve.workers
    if workers == 1:
        return None
    if config.store.kind is not StoreKind.POSTGRESQL:
        return (
            f"serve.workers = {workers}: worker processes share one PostgreSQL store, and "
            'the store is SQLite (one daemon\'s); set store = "postgresql://..." '
            "(docs/operations.md section 10), or serve.workers = 1"
        )
    if config.tunnel.provider != "none" or config.tailscale.mode != "off":
        return (
            f"serve.workers = {workers}: each worker would open its own tunnel "
            "(tunnel.provider / tailscale.mode); publish the port once yourself (public_url) "
            "and leave them off, or set serve.workers = 1"
        )
    return None


def _check_skip_signature(config: Config, errors: list[str]) -> None:
    if not config.skip_signature_verification:
        return
    reasons = []
    if not is_loopback_host(config.serve.bind):
        reasons.append(f'serve.bind = "{config.serve.bind}" is not a loopback address')
    if config.public_url:
        reasons.append(f'public_url = "{config.public_url}" is set')
    if config.tunnel.provider != "none":
        reasons.append(f'[tunnel] provider = "{config.tunnel.provider}"')
    if config.tailscale.mode != "off":
        reasons.append(f'[tailscale] mode = "{config.tailscale.mode}"')
    if reasons:
        errors.append(
            "skip_signature_verification = true: refused because "
            + " and ".join(reasons)
            + "; unsigned webhooks are only accepted on a loopback bind with nothing exposed "
            '(no public_url, [tunnel] provider = "none", [tailscale] mode = "off"); '
            "set skip_signature_verification = false"
        )


def _check_exposure(config: Config, bad: set[str], missing: list[str], warnings: list[str]) -> None:
    """A real provider without a public webhook URL: a gap to fill (like a credential)."""
    if config.provider not in REAL_PROVIDERS or {"provider", "public_url"} & bad:
        return
    if config.public_url:
        url = config.public_url
    elif config.tunnel.provider == "none" and config.tailscale.mode == "off":
        url = local_webhook_url(config)
    else:
        url = None  # decided at start-up, when the tunnel reports its URL
    if url is not None:
        try:
            check_public_webhook(config, url)
        except ConfigError as exc:
            missing.append(exc.message)
    if config.tailscale.mode == "serve" and not config.public_url:
        warnings.append(
            '[tailscale] mode = "serve" publishes the webhook inside your tailnet '
            f'only, where {config.provider} cannot reach it; use mode = "funnel"'
        )


def _warnings(config: Config, warnings: list[str]) -> None:
    if config.tunnel.allow_ngrok_free_tier_loopback_bypass:
        if config.tunnel.provider != "ngrok":
            warnings.append(
                "tunnel.allow_ngrok_free_tier_loopback_bypass = true has no effect "
                'unless [tunnel] provider = "ngrok"'
            )
        elif not is_loopback_host(config.serve.bind):
            warnings.append(
                "tunnel.allow_ngrok_free_tier_loopback_bypass = true has no effect "
                f'with serve.bind = "{config.serve.bind}"; it needs a loopback bind'
            )
    if config.tts.provider in tts_catalog.IGNORED:
        choose = " or ".join(f'"{name}"' for name in tts_catalog.NAMES)
        warnings.append(
            f'tts.provider = "{config.tts.provider}" is ignored for calls (telephony '
            "needs PCM audio); calls use the provider's own voice; choose " + choose
        )
    if config.inbound_policy == "allowlist" and not config.allow_from:
        warnings.append(
            'inbound_policy = "allowlist" with an empty allow_from rejects every '
            'inbound call; add numbers, e.g. allow_from = ["+15550001234"]'
        )
    if config.streaming.enabled and not config.streaming.api_key and not config.realtime.enabled:
        warnings.append(
            "streaming.enabled = true but streaming.api_key is not set; set "
            "OPENAI_API_KEY or run `voicecall secrets set streaming.api_key`"
        )
    if config.realtime.enabled and not config.streaming.enabled:
        warnings.append(
            "realtime.enabled = true has no effect without streaming.enabled = true "
            "(realtime mode bridges media streams); set streaming.enabled = true"
        )
    if config.realtime.enabled and not config.realtime.api_key:
        warnings.append(
            "realtime.enabled = true but realtime.api_key is not set; set "
            "OPENAI_API_KEY or run `voicecall secrets set realtime.api_key`"
        )
    if (
        config.response_model
        and not config.agent.api_key
        and "api.openai.com" in config.agent.base_url
    ):
        warnings.append(
            f'response_model = "{config.response_model}" but agent.api_key is not '
            "set; set OPENAI_API_KEY or run `voicecall secrets set agent.api_key`"
        )
