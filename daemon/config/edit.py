"""Change one key of the config file in place, keeping its comments and layout (tomlkit).

`config set` reads the value the way a shell user means it: a string key takes the text as it
is (so `+15550001234` stays a phone number rather than becoming the integer TOML would read),
every other key takes a TOML literal (`3`, `true`, `["a", "b"]`). Files are replaced
atomically, so a crash mid-write never leaves a half-written config behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from daemon.config import schema
from daemon.config.secrets import SECRET_KEYS
from daemon.errors import ConfigError
from daemon.store.location import mask_url_passwords


def leaf_key(key: str) -> schema.Key:
    """The schema entry of a settable key.

    Raises:
        ConfigError: unknown key (with a suggestion) or a table rather than a key.
    """
    node = schema.lookup(key)
    if isinstance(node, schema.Key):
        return node
    if isinstance(node, schema.Table):
        first = next(iter(node.keys))
        raise ConfigError(f"{key} is a table, not a key; set one of its keys, e.g. {key}.{first}")
    known = [path for path, _ in schema.leaf_paths()]
    hint = schema.suggest(key, known)
    if hint is None:  # a right name in the wrong table: `port` -> `serve.port`
        tail = schema.suggest(key.rsplit(".", 1)[-1], sorted({p.rsplit(".", 1)[-1] for p in known}))
        hint = next((p for p in known if tail and p.rsplit(".", 1)[-1] == tail), None)
    extra = f"; did you mean {hint}?" if hint else "; see `voicecall config show` for every key"
    raise ConfigError(f"{key} is not a config key{extra}")


def parse_value(key: str, text: str) -> Any:
    """Read a command-line value for `key`: verbatim for string keys, else as a TOML literal."""
    spec = leaf_key(key)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if spec.kind == "str" and not isinstance(value, str):
        return text
    return value


def _parse(text: str | None) -> Any:
    """The tomlkit document of `text`; a file that is not TOML is a ConfigError, not a crash."""
    import tomlkit
    from tomlkit.exceptions import ParseError

    try:
        return tomlkit.parse(text or "")
    except ParseError as exc:
        raise ConfigError(
            f"the config file is not valid TOML ({exc}); fix it by hand or start "
            "over with `voicecall config init --force`"
        ) from None


def set_key(text: str | None, key: str, value: Any) -> str:
    """The document `text` (None = empty) with `key` set to `value`, comments kept."""
    import tomlkit  # lazy: only `config set` needs it

    doc = _parse(text)
    *parents, leaf = schema.split_path(key)
    node: Any = doc
    for i, part in enumerate(parents):
        if part not in node:
            # a table whose only content is sub-tables renders as `[a.b]` without an empty `[a]`
            node.add(part, tomlkit.table(is_super_table=i < len(parents) - 1))
        node = node[part]
        if not isinstance(node, Mapping):
            raise ConfigError(
                f"{'.'.join(parents[: i + 1])} is not a table in the config file; "
                "fix it by hand first"
            )
    node[leaf] = value
    return tomlkit.dumps(doc)


def unset_key(text: str | None, key: str) -> tuple[str, bool]:
    """The document with `key` removed (it falls back to its default); and whether it was there."""
    import tomlkit

    doc = _parse(text)
    *parents, leaf = schema.split_path(key)
    node: Any = doc
    for part in parents:
        if not isinstance(node, Mapping) or part not in node:
            return tomlkit.dumps(doc), False
        node = node[part]
    if not isinstance(node, MutableMapping) or leaf not in node:
        return tomlkit.dumps(doc), False
    del node[leaf]
    return tomlkit.dumps(doc), True


def has_secret(data: Mapping[str, Any]) -> bool:
    """Whether a parsed document holds any secret value (then the file must be private): a
    secret key, or a `store` URL that carries a password."""
    store = data.get("store")
    if isinstance(store, str) and mask_url_passwords(store) != store:
        return True
    for key in SECRET_KEYS:
        node: Any = data
        for part in schema.split_path(key):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node:
            return True
    return False


def write_atomic(path: Path, text: str, *, private: bool) -> None:
    """Replace `path` with `text` in one step; mode 0600 when `private`, else keep the old mode.

    The parent folder is created (0700) when missing.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    if private:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
