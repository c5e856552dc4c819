"""Shell completion: the scripts Click generates, and dynamic completion of call ids.

Completion runs on every Tab press, so it must be fast and silent: the call-id completer asks a
running daemon for recent calls with a 1 s deadline, never starts one, and returns nothing on
any failure rather than printing into the user's command line.
"""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

PROG_NAME = "voicecall"
COMPLETE_VAR = "_VOICECALL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
CALL_ID_TIMEOUT_SECONDS = 1.0
CALL_ID_LIMIT = 50


def completion_source(cli: click.Command, shell: str) -> str:
    """The completion script for `shell` (bash, zsh or fish).

    Formats Click's template directly instead of calling `source()`: for bash that method runs
    `bash --version` and warns on stderr, which would make generated files depend on the
    machine that generated them.

    Raises:
        ValueError: `shell` is not one Click supports.
    """
    cls = get_completion_class(shell)
    if cls is None:
        raise ValueError(
            f"no completion support for shell {shell!r}; choose from {', '.join(SHELLS)}"
        )
    comp = cls(cli, {}, PROG_NAME, COMPLETE_VAR)
    return str(cls.source_template % comp.source_vars())


def _socket_flag(ctx: click.Context) -> Any:
    """The --socket value typed on the command line so far, if any."""
    root = ctx.find_root()
    return root.params.get("socket")


def complete_call_id(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Complete `--call-id` from the daemon's recent calls, newest first.

    Returns [] when no daemon runs, it does not answer within 1 s, or anything else fails.
    """
    try:
        from daemon.paths import resolve_paths
        from daemon.rpc.client import RpcClient

        paths = resolve_paths(socket=_socket_flag(ctx))
        with RpcClient(paths.socket, timeout=CALL_ID_TIMEOUT_SECONDS) as client:
            result = client.call("voicecall.list", {"limit": CALL_ID_LIMIT})
        items = []
        for call in result.get("calls", []):
            call_id = str(call.get("callId", ""))
            if not call_id.startswith(incomplete):
                continue
            peer = call.get("to") if call.get("direction") == "outbound" else call.get("from")
            items.append(
                CompletionItem(call_id, help=f"{call.get('state', '')} {peer or ''}".strip())
            )
        return items
    except Exception:  # completion must never print a traceback into the user's prompt
        return []
