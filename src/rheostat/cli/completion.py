"""`rheostat completion SHELL`: click's completion script for bash, zsh or fish."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class


@click.command("completion", short_help="Print a shell completion script.")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_cmd(shell: str) -> None:
    """Print the shell completion script of SHELL: commands, options, kinds, and the names of objects (asked
    of the server at --server, or RHEOSTAT_SERVER, when it answers within a second).

    \b
    Examples:
      source <(rheostat completion bash)                      # this shell
      rheostat completion bash > ~/.local/share/bash-completion/completions/rheostat
      rheostat completion zsh > "${fpath[1]}/_rheostat"
      rheostat completion fish > ~/.config/fish/completions/rheostat.fish
    """
    root = click.get_current_context().find_root()
    cls = get_completion_class(shell)
    assert cls is not None  # the Choice allows only the shells click ships
    script = cls(root.command, {}, "rheostat", "_RHEOSTAT_COMPLETE").source()
    click.echo(script)
