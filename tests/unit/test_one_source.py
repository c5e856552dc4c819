"""Lists that must agree but live apart for a reason (a light CLI, a stdlib-only protocol module)
are tied here, so a change to one side fails a test instead of drifting (issue 14).

- `daemon.rpc.protocol.METHODS` (stdlib-only, read by the CLI and MCP) vs the daemon's
  dispatch table `build_methods`.
- `voicecall_cli.main.COMMAND_MODULES` (the lazy index, so `voicecall status` imports one module):
  the commands are found from it, so every entry must resolve to its module's command.
- Configuration defaults: the schema (the one source the loader fills from) vs the model's
  dataclass defaults vs the starter file `config init` writes.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import click

from daemon.config import schema
from daemon.config.model import Config
from daemon.config.render import STARTER_TOML
from daemon.rpc import protocol
from daemon.rpc.methods import build_methods
from voicecall_cli.main import COMMAND_MODULES


def test_protocol_methods_are_exactly_the_dispatch_table() -> None:
    # build_methods only reads daemon.engine up front; every other lookup happens per call.
    table = build_methods(cast(Any, SimpleNamespace(engine=None)))
    assert sorted(table) == sorted(protocol.METHODS)
    assert len(set(protocol.METHODS)) == len(protocol.METHODS)


def test_command_index_is_the_one_list_of_commands() -> None:
    """Each index entry loads exactly that command, from its module's top level (not a
    subcommand of one of its groups); no command module is left out of the index."""
    from voicecall_cli.main import cli

    modules = {
        p.stem
        for p in Path(importlib.import_module("voicecall_cli.commands").__path__[0]).glob("*.py")
        if p.stem != "__init__"
    }
    assert set(COMMAND_MODULES.values()) == modules, "a module the index does not name"
    ctx = click.Context(cli)
    for name, module_name in sorted(COMMAND_MODULES.items()):
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name, name
        module = importlib.import_module(f"voicecall_cli.commands.{module_name}")
        assert command in vars(module).values(), name
        nested = [
            c
            for v in vars(module).values()
            if isinstance(v, click.Group)
            for c in v.commands.values()
        ]
        assert command not in nested, f"{name}: a subcommand was taken for a top-level one"
    assert sorted(cli.list_commands(ctx)) == sorted(COMMAND_MODULES)


def _model_value(config: Config, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_model_defaults_are_the_schema_defaults() -> None:
    config = Config.defaults(Path("/nonexistent/state"))
    checked = 0
    for path, key in schema.leaf_paths():
        # `store` is always set by the loader; `messages.*` feeds effective_tts; `numbers.*`
        # is a table of user-chosen keys with no defaults.
        if path == "store" or path.startswith(("messages.", "numbers.")):
            continue
        want = tuple(key.default) if isinstance(key.default, list) else key.default
        assert _model_value(config, path) == want, path
        checked += 1
    assert checked > 50


def _leaves(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in table.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


STARTER_DEPARTS = {"mock.replies"}
"""Keys the starter file sets to something other than the default, on purpose: the mock
provider's caller says something, so a first `voicecall call --mode conversation` shows a turn."""


def test_starter_file_writes_the_schema_defaults() -> None:
    leaves = dict(schema.leaf_paths())
    written = dict(_leaves(tomllib.loads(STARTER_TOML)))
    assert set(written) >= STARTER_DEPARTS
    for path, value in written.items():
        if path in STARTER_DEPARTS:
            continue
        assert path in leaves, path
        want = leaves[path].default
        assert value == want, f"{path}: the starter writes {value!r}, the default is {want!r}"
