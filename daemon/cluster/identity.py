"""This daemon's id on a shared store: made once, kept in the state folder.

A daemon restarted (even after `kill -9`) keeps its id, so it takes its own live calls back at
once instead of waiting for the others to presume it dead. The id names the host for people
reading `voicecall_daemons`; the random part keeps two machines with one hostname apart.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from daemon.errors import ConfigError

ID_FILE = "daemon-id"
MAX_LENGTH = 200


def daemon_id(state: Path, file_name: str = ID_FILE) -> str:
    """The id kept in `state`/`file_name` (daemon-id; a worker's daemon-id-w<i>), created on
    first use."""
    path = state / file_name
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise ConfigError(
            f"cannot read the daemon id {path} ({exc.strerror}); fix its "
            "permissions or delete it (a new one is made)"
        ) from None
    if text:
        if len(text) > MAX_LENGTH or not text.isprintable():
            raise ConfigError(
                f"the daemon id in {path} is not a short printable line; delete "
                "the file (a new one is made)"
            )
        return text
    made = f"{socket.gethostname()[:60]}-{secrets.token_hex(4)}"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{file_name}.{os.getpid()}")
    partial.write_text(made + "\n", encoding="utf-8")
    os.replace(partial, path)
    return made
