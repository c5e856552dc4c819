"""`voicecall completion SHELL`: print the shell completion script.

The same script ships pre-generated in `completions/`; this command is for installs that do
not put those files anywhere the shell looks.
"""

from __future__ import annotations

import click

from voicecall_cli.completion import SHELLS, completion_source


@click.command("completion", short_help="Print the shell completion script.")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    Completion works through the installed `voicecall` command; bash needs 4.4 or newer.
    Call ids complete from a running daemon.

    \b
    Examples:
      $ voicecall completion bash > ~/.local/share/bash-completion/completions/voicecall
      $ voicecall completion zsh > "${fpath[1]}/_voicecall"
      $ voicecall completion fish > ~/.config/fish/completions/voicecall.fish
      $ eval "$(voicecall completion bash)"
    """
    click.echo(completion_source(ctx.find_root().command, shell), nl=False)
