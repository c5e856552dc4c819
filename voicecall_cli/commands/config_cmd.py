"""`voicecall config`: create, inspect, check and edit the TOML config file.

These commands work on the file directly and never need the daemon. Everything beyond Click
(`daemon.config`, tomlkit, json5, keyring) is imported inside the commands, so that merely
starting `voicecall` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from voicecall_cli.context import CliContext, pass_ctx
from voicecall_cli.errors import CliError, ExitStatus
from voicecall_cli.output import emit_json

if TYPE_CHECKING:
    from daemon.config.loader import Report
    from daemon.config.model import Config
    from daemon.config.openclaw import Conversion
    from daemon.errors import ConfigError

JSON_HELP = "Print one JSON document instead of text."


def _problems_error(summary: str, problems: list[str] | tuple[str, ...]) -> CliError:
    lines = [summary, *(f"  - {p}" for p in problems)]
    return CliError("\n".join(lines))


def _from_config_error(exc: ConfigError) -> CliError:
    if exc.problems == [exc.message]:
        return CliError(exc.message)
    return _problems_error(exc.message, exc.problems)


def _check(ctx: CliContext, *, use_keyring: bool = True) -> tuple[Config | None, Report, bool]:
    """Read and check the config file; (config or None, report, whether the file exists)."""
    from daemon.config.loader import check_document, read_document
    from daemon.errors import ConfigError

    try:
        data = read_document(ctx.paths.config)
    except ConfigError as exc:
        raise _from_config_error(exc) from None
    source = ctx.paths.config if data is not None else None
    config, report = check_document(data or {}, ctx.paths, use_keyring=use_keyring, source=source)
    return config, report, data is not None


def _usable(ctx: CliContext) -> Config:
    """The effective config, or an error listing every wrong value; gaps are only warned about."""
    config, report, _ = _check(ctx)
    if config is None:
        raise _problems_error(
            f"{ctx.paths.config} has {len(report.errors)} problem(s); "
            "fix them (`voicecall config validate` lists them too):",
            report.errors,
        )
    for line in (*report.missing, *report.warnings):
        click.echo(f"Warning: {line}", err=True)
    return config


@click.group("config")
def config_group() -> None:
    """Create, inspect, check and edit the config file (TOML).

    The file lives at $XDG_CONFIG_HOME/voicecall/config.toml unless --config, VOICECALL_CONFIG
    or VOICECALL_HOME says otherwise. No file at all is valid: the mock provider.

    \b
    Examples:
      $ voicecall config init
      $ voicecall config set provider twilio
      $ voicecall config validate
    """


@config_group.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def init_cmd(ctx: CliContext, force: bool, as_json: bool) -> None:
    """Write a commented starter config file.

    The starter runs the mock provider and shows the common keys as comments.

    \b
    Examples:
      $ voicecall config init
      $ voicecall --config ./voice.toml config init --force
    """
    from daemon.config.edit import write_atomic
    from daemon.config.render import STARTER_TOML

    path = ctx.paths.config
    if path.exists() and not force:
        raise CliError(
            f"{path} already exists; edit it with `voicecall config set`, "
            "or pass --force to replace it"
        )
    write_atomic(path, STARTER_TOML, private=False)
    if as_json:
        emit_json({"path": str(path), "written": True})
    else:
        click.echo(f"wrote {path}")


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def show_cmd(ctx: CliContext, as_json: bool) -> None:
    """Print the effective config: file, environment and defaults combined.

    Secrets are shown as ******** with where each came from (env, config file, keyring).

    \b
    Examples:
      $ voicecall config show
      $ voicecall config show --json | jq .config.serve
    """
    from daemon.config.render import config_to_dict, to_toml

    config = _usable(ctx)
    tree = config_to_dict(config)
    if as_json:
        emit_json(
            {
                "path": str(ctx.paths.config),
                "exists": config.source is not None,
                "config": tree,
                "secretSources": dict(config.secret_sources),
                "warnings": list(config.warnings),
            }
        )
        return
    origin = str(config.source) if config.source else f"defaults (no file at {ctx.paths.config})"
    click.echo(
        to_toml(tree, sources=config.secret_sources, header=f"effective configuration: {origin}"),
        nl=False,
    )


@config_group.command("get")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def get_cmd(ctx: CliContext, key: str, as_json: bool) -> None:
    """Print the effective value of one dotted KEY (a table prints as TOML).

    Exits 1 when the key is unset. Secrets print as ********.

    \b
    Examples:
      $ voicecall config get provider
      $ voicecall config get serve.port
      $ voicecall config get tts
    """
    from daemon.config import schema
    from daemon.config.edit import leaf_key
    from daemon.config.render import config_to_dict, get_path, to_toml
    from daemon.errors import ConfigError

    if schema.lookup(key) is None or key.startswith("messages"):
        try:
            leaf_key(key)
        except ConfigError as exc:
            raise CliError(exc.message) from None
        raise CliError(
            f"{key} is merged into tts.* in the effective config; "
            f"see `voicecall config get {key.removeprefix('messages.')}`"
        )
    config = _usable(ctx)
    value = get_path(config_to_dict(config), key)
    if as_json:
        emit_json({"key": key, "value": value})
    elif isinstance(value, dict):
        nested: dict[str, object] = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        click.echo(to_toml(nested, sources=config.secret_sources), nl=False)
    elif value is not None:
        click.echo(value if isinstance(value, str) else schema.show(value))
    if value is None:
        if not as_json:
            click.echo(f"{key} is unset", err=True)
        click.get_current_context().exit(ExitStatus.ERROR)


@config_group.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def set_cmd(ctx: CliContext, key: str, value: str, as_json: bool) -> None:
    """Set one dotted KEY to VALUE in the config file, keeping its comments.

    VALUE is taken as text for string keys, else as a TOML literal (3, true, ["a", "b"]). The
    new file is checked first and not written if the change makes it invalid. Missing
    credentials are only warned about, so keys can be filled in any order.

    \b
    Examples:
      $ voicecall config set provider twilio
      $ voicecall config set from_number +15550001234
      $ voicecall config set serve.port 8080
      $ voicecall config set allow_from '["+15550001234", "+15550005678"]'
    """
    import tomllib

    from daemon.config import edit, schema
    from daemon.config.loader import check_document
    from daemon.config.secrets import is_secret_key
    from daemon.errors import ConfigError

    path = ctx.paths.config
    try:
        parsed = edit.parse_value(key, value)
        old_text = _read_valid(ctx)
        new_text = edit.set_key(old_text, key, parsed)
    except ConfigError as exc:
        raise CliError(exc.message) from None
    _, report = check_document(tomllib.loads(new_text), ctx.paths, source=path)
    before = _errors_of(old_text, ctx) if old_text else set()
    introduced = [e for e in report.errors if e not in before]
    if introduced:
        shown = schema.show(parsed, secret=is_secret_key(key))
        raise _problems_error(
            f"not written: {key} = {shown} would make {path} invalid:", introduced
        )
    data = tomllib.loads(new_text)
    edit.write_atomic(path, new_text, private=edit.has_secret(data))
    notes = [*(e for e in report.errors if e in before), *report.missing, *report.warnings]
    if is_secret_key(key):
        notes.append(
            f"{key} is now stored in {path} (mode 0600); the OS keyring is safer: "
            f"`voicecall secrets set {key}`"
        )
    shown = schema.show(parsed, secret=is_secret_key(key))
    apply_with = _apply_with(ctx, key)
    if as_json:
        from daemon.store.location import mask_url_passwords

        value = mask_url_passwords(parsed) if isinstance(parsed, str) else parsed
        emit_json(
            {
                "key": key,
                "value": "********" if is_secret_key(key) else value,
                "path": str(path),
                "written": True,
                "warnings": notes,
                "applyWith": apply_with,
            }
        )
        return
    for note in notes:
        click.echo(f"Warning: {note}", err=True)
    click.echo(f"set {key} = {shown} in {path}")
    _say_how_to_apply(key, apply_with)


def _apply_with(ctx: CliContext, key: str) -> str | None:
    """How a running daemon takes a change to `key`: None when no daemon runs."""
    from daemon.config.live import is_live

    try:
        with ctx.connect(timeout=2.0, autostart=False) as client:
            client.call("daemon.status")
    except Exception:  # no daemon, or one that does not answer: nothing to tell
        return None
    return "voicecall daemon reload" if is_live(key) else "voicecall daemon restart"


def _say_how_to_apply(key: str, apply_with: str | None) -> None:
    if apply_with is None:
        return
    if apply_with.endswith("reload"):
        click.echo(
            f"Note: the running daemon still uses the old {key}; `{apply_with}` "
            "applies it without dropping calls",
            err=True,
        )
    else:
        click.echo(
            f"Note: the running daemon still uses the old {key}, which a reload cannot "
            f"change; `{apply_with}` applies it (live calls are restored after it)",
            err=True,
        )


def _errors_of(text: str, ctx: CliContext) -> set[str]:
    import tomllib

    from daemon.config.loader import check_document

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return set()
    return set(check_document(data, ctx.paths, use_keyring=False)[1].errors)


@config_group.command("unset")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def unset_cmd(ctx: CliContext, key: str, as_json: bool) -> None:
    """Remove one dotted KEY from the config file, so its default applies again.

    \b
    Examples:
      $ voicecall config unset public_url
      $ voicecall config unset serve.port
    """
    from daemon.config import edit
    from daemon.errors import ConfigError

    path = ctx.paths.config
    try:
        edit.leaf_key(key)
    except ConfigError as exc:
        raise CliError(exc.message) from None
    text = _read_valid(ctx)
    try:
        new_text, removed = edit.unset_key(text, key)
    except ConfigError as exc:
        raise CliError(exc.message) from None
    if removed:
        edit.write_atomic(path, new_text, private=False)
    apply_with = _apply_with(ctx, key) if removed else None
    if as_json:
        emit_json({"key": key, "path": str(path), "removed": removed, "applyWith": apply_with})
    elif not removed:
        click.echo(f"{key} was not set in {path}", err=True)
    else:
        click.echo(f"removed {key} from {path}")
        _say_how_to_apply(key, apply_with)


def _read_valid(ctx: CliContext) -> str | None:
    """The config file's text (None if absent); a TOML syntax error is one clear CliError,
    the same one `config validate` prints."""
    from daemon.config.loader import read_document
    from daemon.errors import ConfigError

    path = ctx.paths.config
    try:
        read_document(path)
    except ConfigError as exc:
        raise CliError(exc.message) from None
    return path.read_text(encoding="utf-8") if path.exists() else None


@config_group.command("validate")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def validate_cmd(ctx: CliContext, as_json: bool) -> None:
    """Check the config file and print every problem at once; exit 1 if there is any.

    Missing credentials count as problems: the daemon would refuse to start.

    \b
    Examples:
      $ voicecall config validate
      $ voicecall config validate --json
    """
    try:
        _, report, exists = _check(ctx)
    except CliError as exc:
        if not as_json:
            raise
        report, exists = None, True
        errors, warnings = [exc.message], []
    if report is not None:
        errors, warnings = list(report.problems), list(report.warnings)
    path = ctx.paths.config
    if as_json:
        emit_json({"valid": not errors, "path": str(path), "errors": errors, "warnings": warnings})
    else:
        for line in errors:
            click.echo(f"Error: {line}", err=True)
        for line in warnings:
            click.echo(f"Warning: {line}", err=True)
        if not errors:
            suffix = "" if exists else " (no file: the defaults, provider mock)"
            click.echo(f"config OK: {path}{suffix}")
    if errors:
        click.get_current_context().exit(ExitStatus.ERROR)


@config_group.command("path")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def path_cmd(ctx: CliContext, as_json: bool) -> None:
    """Print the path of the config file (it may not exist yet).

    \b
    Examples:
      $ voicecall config path
      $ $EDITOR "$(voicecall config path)"
    """
    path = ctx.paths.config
    if as_json:
        emit_json({"path": str(path), "exists": path.exists()})
    else:
        click.echo(str(path))


def _read_openclaw(file: Path) -> Conversion:
    """Parse an OpenClaw JSON5 file and convert it; any problem is a CliError naming the file."""
    import json5

    from daemon.config.openclaw import convert_openclaw
    from daemon.errors import ConfigError

    try:
        data = json5.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ConfigError(f"{file} holds a JSON {type(data).__name__}, not an object")
        return convert_openclaw(data)
    except ValueError as exc:  # json5 syntax errors
        raise CliError(f"{file} is not valid JSON5: {exc}") from None
    except ConfigError as exc:
        raise CliError(exc.message) from None


@config_group.command("import-openclaw")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--write", is_flag=True, help="Write the result to the config file instead of printing it."
)
@click.option("--force", is_flag=True, help="With --write: replace an existing config file.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def import_cmd(ctx: CliContext, file: Path, write: bool, force: bool, as_json: bool) -> None:
    """Convert an OpenClaw voice-call plugin config (JSON5) into voicecall TOML.

    FILE is a whole openclaw.json (plugins.entries.voice-call.config and messages.tts are
    used) or the plugin config object alone. Keys without a voicecall counterpart are listed
    on stderr. The TOML goes to stdout unless --write.

    \b
    Examples:
      $ voicecall config import-openclaw ~/.openclaw/openclaw.json
      $ voicecall config import-openclaw ~/.openclaw/openclaw.json --write
      $ voicecall config import-openclaw plugin.json5 > voice.toml
    """
    import tomllib

    from daemon.config.edit import has_secret, write_atomic
    from daemon.config.loader import check_document
    from daemon.config.render import get_path, to_toml
    from daemon.config.secrets import SECRET_KEYS

    result = _read_openclaw(file)
    text = to_toml(
        result.values, header=f"imported from {file} by voicecall config import-openclaw"
    )
    _, report = check_document(tomllib.loads(text), ctx.paths, use_keyring=False)
    if as_json:
        emit_json(
            {
                "config": result.values,
                "unmapped": result.unmapped,
                "notes": result.notes,
                "errors": list(report.errors),
            }
        )
    for line in result.notes:
        click.echo(f"Note: {line}", err=True)
    for line in result.unmapped:
        click.echo(f"Not imported: {line}", err=True)
    for key in SECRET_KEYS:
        try:
            get_path(result.values, key)
        except KeyError:
            continue
        click.echo(
            f"Note: the secret {key} was copied as is; the keyring is safer: "
            f"`voicecall secrets set {key}`, then `voicecall config unset {key}`",
            err=True,
        )
    if report.errors:
        raise _problems_error(
            "the imported config is not valid; fix these in the output (nothing was written):",
            report.errors,
        )
    if not write:
        if not as_json:
            sys.stdout.write(text)
        return
    path = ctx.paths.config
    if path.exists() and not force:
        raise CliError(
            f"{path} already exists; pass --force to replace it, or print the "
            "import without --write and merge by hand"
        )
    write_atomic(path, text, private=has_secret(result.values))
    if not as_json:
        click.echo(f"wrote {path}")
