"""docs/cli.md, written from the command tree itself so that it cannot drift from `--help`.

    python -m rheostat.cli.reference > docs/cli.md

tests/test_cli_help.py fails when the committed file differs from what this prints.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

WIDTH = 100

HEAD = """# The `rheostat` command line

Generated from the code by `python -m rheostat.cli.reference > docs/cli.md`: do not edit by hand (a test
compares this file with what the command prints). Each section is the command's `--help`.

Habits taken from kubectl and flux: `get KIND [NAME]` with kubectl's aliases (`cd`, `ks`, ...), `-o
table|wide|json|yaml|name`, `-n NAMESPACE` / `-A`, `--watch`, `describe`, `rollout status`, `logs -f`,
`events --watch`; tables are plain columns when the output is not a terminal. Every command that talks to
the server takes `--server` (or `RHEOSTAT_SERVER`); actions need the API token (`--token`,
`RHEOSTAT_TOKEN`, or `<data-dir>/token`).
"""


def commands(cmd: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            sub = cmd.commands[name]
            if not sub.hidden:
                yield from commands(sub, (*path, name))


def help_text(cmd: click.Command, path: tuple[str, ...]) -> str:
    """What `rheostat ... --help` prints, at a fixed width."""
    ctx: click.Context | None = None
    for depth in range(1, len(path) + 1):
        ctx = click.Context(
            cmd if depth == len(path) else click.Command(path[depth - 1]),
            info_name=path[depth - 1],
            parent=ctx,
            terminal_width=WIDTH,
            max_content_width=WIDTH,
        )
    assert ctx is not None
    return cmd.get_help(ctx)


def markdown(root: click.Command) -> str:
    found = list(commands(root, ("rheostat",)))
    out = [HEAD, "## Commands\n"]
    out.extend(f"- [`{' '.join(p)}`](#{'-'.join(p)}): {c.get_short_help_str(WIDTH)}" for p, c in found)
    for p, cmd in found:
        out.append(f'\n<a id="{"-".join(p)}"></a>\n\n## {" ".join(p)}\n')
        out.append("```text\n" + help_text(cmd, p).rstrip() + "\n```")
    return "\n".join(out) + "\n"


def main() -> None:
    from rheostat.cli.main import cli

    click.echo(markdown(cli), nl=False)


if __name__ == "__main__":
    main()
