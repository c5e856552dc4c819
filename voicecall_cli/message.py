"""`-m/--message` values: text as given, `-` for stdin, `@FILE` for a file's contents.

A message that really starts with `@` is written with the `@` doubled (`-m @@home`), the
convention curl uses, so that no text is ever impossible to say.
"""

from __future__ import annotations

import sys

import click

from voicecall_cli.errors import CliError

HELP_SUFFIX = " `-` reads it from stdin, `@FILE` from a file."


def resolve(value: str, *, option: str = "--message") -> str:
    """The message `value` stands for; an empty result is a usage error."""
    if value == "-":
        text = sys.stdin.read()
        origin = "stdin"
    elif value.startswith("@@"):
        text = value[1:]
        origin = ""
    elif value.startswith("@") and len(value) > 1:
        path = value[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise CliError(
                f"{option} {value}: no file {path!r}; to say a text that starts "
                f"with @, double it: @{value}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise CliError(f"{option} {value}: cannot read {path!r}: {reason}") from None
        origin = path
    else:
        return value
    text = text.strip()
    if not text:
        raise click.UsageError(
            f"{option} {value}: {origin or 'the message'} is empty; nothing to say"
        )
    return text
