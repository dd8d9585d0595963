"""What the commands share: options, the API client, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from rheostat.cli.client import DEFAULT_SERVER, ApiError, Client, find_token
from rheostat.cli.output import print_table

err = Console(stderr=True, soft_wrap=True)


def split_name(name: str, namespace: str) -> str:
    return name if "/" in name else f"{namespace}/{name}"


server_option = click.option(
    "--server",
    envvar="RHEOSTAT_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="The API of a running `rheostat run` (or RHEOSTAT_SERVER).",
)
token_option = click.option(
    "--token",
    envvar="RHEOSTAT_TOKEN",
    default=None,
    help="API token for actions (or RHEOSTAT_TOKEN; default: <data-dir>/token).",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".rheostat"),
    show_default=True,
    help="Where `rheostat run` keeps its state; the API token is read from <data-dir>/token.",
)
ns_option = click.option(
    "-n", "--namespace", default="default", show_default=True, help="The namespace of the object."
)
# `get`, `describe`, `rollout status`: without -n every namespace is searched (a name found in one is enough).
namespace_option = click.option(
    "-n",
    "--namespace",
    default=None,
    help="Only objects of this namespace (default: every namespace).",
)
all_namespaces_option = click.option(
    "-A",
    "--all-namespaces",
    is_flag=True,
    help="Objects of every namespace, with a NAMESPACE column (the default without -n).",
)


def output_option(*formats: str, default: str = "table") -> Callable[[Any], Any]:
    """`-o/--output`, kubectl's flag; `formats` the ones the command prints."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(formats),
        default=default,
        show_default=True,
        help="Output format: " + ", ".join(formats) + ".",
    )


def client(server: str, token: str | None = None, data_dir: Path = Path(".rheostat")) -> Client:
    return Client(server, find_token(token, data_dir))


def stdout() -> Console:
    """stdout; when it is not a terminal (a pipe, a file), tables are not squeezed into 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def fail(exc: Exception) -> NoReturn:
    err.print(f"[red]error:[/red] {exc}", highlight=False)
    sys.exit(1)


def fetch(server: str, path: str, *, text: bool = False, **params: Any) -> Any:
    """One GET against the server's API; a failure is a one-line message and exit 1.

    Reading needs no token on loopback; elsewhere it comes from RHEOSTAT_TOKEN or ./.rheostat/token.
    """
    c = client(server)
    try:
        return c.text(path, **params) if text else c.get(path, **params)
    except ApiError as exc:
        fail(exc)
    finally:
        c.close()


def print_items(
    items: list[dict[str, Any]],
    output: str,
    columns: tuple[str, ...],
    row: Callable[[dict[str, Any]], list[str]],
) -> None:
    if output == "json":
        click.echo(json.dumps(items, indent=2))
        return
    print_table(columns, [row(it) for it in items])
