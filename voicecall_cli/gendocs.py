"""Generate `completions/` and `man/` from the Click tree: `python -m voicecall_cli.gendocs`.

One source of truth (httpie's approach): the help text users see with `--help` is the text of
the man pages, so the two cannot drift. Output is deterministic (sorted, no dates, no
machine-specific values) so that `--check`, run by the test suite, fails exactly when a
command changed and the generated files were not refreshed.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from voicecall_cli.completion import PROG_NAME, SHELLS, completion_source
from voicecall_cli.errors import ExitStatus

REPO_ROOT = Path(__file__).resolve().parents[1]
MANUAL = "voicecall manual"

EXIT_STATUS_TEXT: dict[ExitStatus, str] = {
    ExitStatus.OK: "The operation succeeded.",
    ExitStatus.ERROR: "The operation failed: unknown call, provider error, timeout.",
    ExitStatus.USAGE: "Usage error: a wrong option, argument or parameter value.",
    ExitStatus.DAEMON_UNREACHABLE: "The daemon is unreachable and was not started "
    "(--no-autostart, VOICECALL_NO_AUTOSTART, or it failed).",
    ExitStatus.CTRL_C: "Interrupted (Ctrl-C).",
}

ENVIRONMENT_TEXT: list[tuple[str, str]] = [
    (
        "VOICECALL_HOME",
        "Keep everything in one folder: DIR/config.toml, DIR/state/ and DIR/run/daemon.sock.",
    ),
    ("VOICECALL_CONFIG", "The config file (as --config)."),
    ("VOICECALL_SOCKET", "The daemon socket (as --socket)."),
    (
        "VOICECALL_STORE",
        "The store, overriding the store key: a folder (SQLite) or a "
        "postgresql:// URL (its password is never shown).",
    ),
    ("VOICECALL_NO_AUTOSTART", "Set to 1 to never start the daemon (as --no-autostart)."),
    ("VOICECALL_NO_KEYRING", "Set to 1 so the daemon never reads the OS keyring."),
    (
        "XDG_CONFIG_HOME",
        "Base of the default config file and of the systemd user units (default ~/.config).",
    ),
    ("XDG_STATE_HOME", "Base of the default state folder (default ~/.local/state)."),
    ("XDG_RUNTIME_DIR", "Base of the default socket folder."),
    (
        "PYTHON_KEYRING_BACKEND",
        "Choose the keyring backend, e.g. "
        "keyrings.alt.file.PlaintextKeyring on a headless machine.",
    ),
    ("NO_COLOR", "Disable coloured output."),
]


def _secret_env() -> list[tuple[str, str]]:
    """The secrets' environment variables, each with the keys it sets."""
    from daemon.config.secrets import SECRET_KEYS

    by_var: dict[str, list[str]] = {}
    for key, var in SECRET_KEYS.items():
        if var:
            by_var.setdefault(var, []).append(key)
    return [
        (var, "Secret for " + ", ".join(keys) + "; wins over the config file and keyring.")
        for var, keys in sorted(by_var.items())
    ]


FILES_TEXT: list[tuple[str, str]] = [
    ("$XDG_CONFIG_HOME/voicecall/config.toml", "The config file (TOML); none means defaults."),
    (
        "$XDG_STATE_HOME/voicecall/",
        "The call store (SQLite, unless store names another "
        "folder or a PostgreSQL URL) and daemon.log.",
    ),
    (
        "$XDG_RUNTIME_DIR/voicecall/daemon.sock",
        "The daemon socket (0600, in a 0700 folder); "
        "/tmp/voicecall-UID/daemon.sock without "
        "XDG_RUNTIME_DIR.",
    ),
    (
        "$XDG_CONFIG_HOME/systemd/user/voicecall.service",
        "The systemd user unit written by voicecall service install.",
    ),
    ("$XDG_CONFIG_HOME/systemd/user/voicecall.socket", "Its socket unit (--socket-activation)."),
]


@dataclass(frozen=True, slots=True)
class Page:
    """One command in the tree, with the Click context that renders its usage."""

    words: tuple[str, ...]
    command: click.Command
    ctx: click.Context

    @property
    def name(self) -> str:
        """The man page name: `voicecall`, `voicecall-secrets-set`."""
        return "-".join(self.words)


def walk(cli: click.Command) -> Iterator[Page]:
    """Every visible command, depth first, subcommands in name order."""

    def visit(
        cmd: click.Command, words: tuple[str, ...], parent: click.Context | None
    ) -> Iterator[Page]:
        # context_settings carry the root's `-h` alias and width, as at run time.
        ctx = click.Context(cmd, info_name=words[-1], parent=parent, **cmd.context_settings)
        yield Page(words, cmd, ctx)
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.list_commands(ctx)):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    yield from visit(sub, (*words, name), ctx)

    yield from visit(cli, (PROG_NAME,), None)


def escape(text: str) -> str:
    """Escape text for roff: backslashes, hyphens (so options copy-paste), leading dots."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + ln) if ln.startswith((".", "'")) else ln for ln in text.split("\n")]
    return "\n".join(lines)


def help_to_roff(help_text: str) -> list[str]:
    """Click help (paragraphs; `\\b` marks a block kept as typed) as roff paragraphs."""
    text = inspect.cleandoc(help_text).split("\f", 1)[0].rstrip()
    out: list[str] = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        if lines and lines[0].strip() == "\b":
            out += [".PP", ".nf", *(escape(ln) for ln in lines[1:]), ".fi"]
        elif para.strip():
            out += [".PP", escape(" ".join(ln.strip() for ln in lines))]
    return out


def _section(title: str) -> list[str]:
    return [f".SH {title}"]


def _tagged(tag: str, text: str) -> list[str]:
    return [".TP", f"\\fB{escape(tag)}\\fR", escape(text)]


def man_page(page: Page, version: str, children: list[Page]) -> str:
    """Render one command as a roff man page."""
    cmd, ctx = page.command, page.ctx
    title = page.name.upper()
    lines = [
        f'.TH "{escape(title)}" "1" "" "voicecall {escape(version)}" "{MANUAL}"',
        ".nh",  # no hyphenation: command and option names must stay whole
        ".ad l",
        *_section("NAME"),
        f"{escape(page.name)} \\- {escape(cmd.get_short_help_str(limit=300))}",
        *_section("SYNOPSIS"),
        f".B {escape(' '.join(page.words))}",
        escape(" ".join(cmd.collect_usage_pieces(ctx))),
        *_section("DESCRIPTION"),
        *help_to_roff(cmd.help or cmd.short_help or ""),
    ]
    arguments = [p for p in cmd.get_params(ctx) if isinstance(p, click.Argument)]
    if arguments:
        lines += _section("ARGUMENTS")
        for arg in arguments:
            kind = arg.type
            text = (
                "One of: " + ", ".join(map(str, kind.choices)) + "."
                if isinstance(kind, click.Choice)
                else f"A {kind.name} value."
            )
            lines += _tagged(arg.make_metavar(ctx), text)
    records = [rec for p in cmd.get_params(ctx) if (rec := p.get_help_record(ctx))]
    if records:
        lines += _section("OPTIONS")
        for opts, text in records:
            lines += _tagged(opts, text)
    if children:
        lines += _section("COMMANDS")
        for child in children:
            lines += _tagged(
                child.words[-1],
                child.command.get_short_help_str(limit=300) + f" See {child.name}(1).",
            )
    lines += _section("EXIT STATUS")
    for status in ExitStatus:
        lines += _tagged(str(int(status)), EXIT_STATUS_TEXT[status])
    lines += _section("ENVIRONMENT")
    for var, text in [*ENVIRONMENT_TEXT, *_secret_env()]:
        lines += _tagged(var, text)
    lines += _section("FILES")
    for path, text in FILES_TEXT:
        lines += _tagged(path, text)
    see_also = [] if len(page.words) == 1 else ["-".join(page.words[:-1])]
    see_also += [child.name for child in children]
    if see_also:
        lines += _section("SEE ALSO")
        lines.append(escape(", ".join(f"{name}(1)" for name in see_also)))
    return "\n".join(lines) + "\n"


def project_version(root: Path = REPO_ROOT) -> str:
    """The version in pyproject.toml (not the installed metadata, which may lag behind)."""
    try:
        with open(root / "pyproject.toml", "rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("voicecall")
        except PackageNotFoundError:
            return "unknown"


def render(cli: click.Command, version: str) -> dict[str, str]:
    """Every generated file, by path relative to the repository root."""
    files = {f"completions/{PROG_NAME}.{shell}": completion_source(cli, shell) for shell in SHELLS}
    pages = list(walk(cli))
    for page in pages:
        children = [p for p in pages if p.words[:-1] == page.words]
        files[f"man/{page.name}.1"] = man_page(page, version, children)
    return files


def _generated_here(root: Path) -> set[str]:
    """Files in the output folders that look generated (candidates for removal)."""
    found = {str(p.relative_to(root)) for p in (root / "man").glob(f"{PROG_NAME}*.1")}
    found |= {str(p.relative_to(root)) for p in (root / "completions").glob(f"{PROG_NAME}.*")}
    return found


def stale_files(root: Path, expected: dict[str, str]) -> list[str]:
    """Paths whose content differs, that are missing, or that no command generates any more."""
    stale = [
        rel
        for rel, text in expected.items()
        if not (root / rel).is_file() or (root / rel).read_text() != text
    ]
    stale += sorted(_generated_here(root) - set(expected))
    return sorted(stale)


def write(root: Path, expected: dict[str, str]) -> list[str]:
    """Write the generated files, remove leftovers; return the paths that changed."""
    changed = stale_files(root, expected)
    for rel in changed:
        path = root / rel
        if rel in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[rel])
        else:
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    """Generate or check; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m voicecall_cli.gendocs",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing the files that are out of date",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=REPO_ROOT,
        help="the folder that holds completions/ and man/ (default: the repo)",
    )
    args = parser.parse_args(argv)
    from voicecall_cli.main import cli

    expected = render(cli, project_version())
    root: Path = args.output_dir
    if args.check:
        stale = stale_files(root, expected)
        for rel in stale:
            print(f"stale: {rel}", file=sys.stderr)
        if stale:
            print("regenerate with: python -m voicecall_cli.gendocs", file=sys.stderr)
            return 1
        return 0
    changed = write(root, expected)
    print(f"{len(expected)} files generated, {len(changed)} changed")
    for rel in changed:
        print(f"  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
