"""Whom the gateway socket may be trusted with (SPEC section 2). Stdlib-only: the CLI uses it.

The default socket folder `/tmp/voicecall-<uid>/` sits in a world-writable place, so another
user can create it first, with a listener of their own inside, and receive every request (and
answer them). Both ends therefore check before they trust the path:

- the socket's folder must be a directory owned by the current user with no group or other
  permission bits (the daemon refuses to start in such a folder, and never chmods one it finds
  loose: a stranger may already have planted something in it; the CLI refuses to connect);
- the CLI also asks the kernel who listens (SO_PEERCRED) and sends nothing to another uid.

What this cannot stop: the superuser, and a folder whose *parent* a stranger controls (only the
immediate folder is checked; `/tmp` is sticky, so a stranger cannot rename our folder there).
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

from daemon.errors import VoicecallError


class UntrustedSocketError(VoicecallError):
    """The socket's folder, or the process listening on the socket, is not the current user's."""


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_socket_folder(folder: Path) -> None:
    """Raise UntrustedSocketError unless `folder` is ours and private; a missing folder passes
    (whoever creates it then creates it private)."""
    try:
        link = os.lstat(folder)
    except FileNotFoundError:
        return
    me = os.getuid()
    if stat.S_ISLNK(link.st_mode) and link.st_uid != me:
        raise UntrustedSocketError(
            f"refusing the socket folder {folder}: it is a symbolic link owned by "
            f"{_user(link.st_uid)}, not by you ({_user(me)}); remove it, or choose another "
            "socket with --socket or VOICECALL_SOCKET"
        )
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    where = f"the socket folder {folder} (owner {_user(info.st_uid)}, mode {mode:04o})"
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedSocketError(
            f"refusing {where}: it is not a folder; remove it, or choose "
            "another socket with --socket or VOICECALL_SOCKET"
        )
    if info.st_uid != me:
        raise UntrustedSocketError(
            f"refusing {where}: another user created it, so whatever listens in it is theirs, "
            f"not yours ({_user(me)}); do not use it: have it removed (`sudo rm -r {folder}`), "
            "or choose another socket with --socket, VOICECALL_SOCKET or XDG_RUNTIME_DIR"
        )
    if mode & 0o077:
        raise UntrustedSocketError(
            f"refusing {where}: other users have access to it; check that nothing in it is "
            f"foreign, then `chmod 700 {folder}` (or remove it and let the daemon create it)"
        )


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected Unix socket (None if unknown)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def check_listener(sock: socket.socket, path: Path) -> None:
    """Raise UntrustedSocketError when the process listening on `path` is not the current
    user's. Called after connect and before the first byte is sent."""
    uid = peer_uid(sock)
    if uid is not None and uid != os.getuid():
        raise UntrustedSocketError(
            f"refusing {path}: the process listening on it runs as {_user(uid)}, not as you "
            f"({_user(os.getuid())}); nothing was sent. Stop using that socket: choose another "
            "with --socket, VOICECALL_SOCKET or XDG_RUNTIME_DIR, and check who created it"
        )
