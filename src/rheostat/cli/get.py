"""`rheostat get KIND [NAME]`, in kubectl's habits: aliases, -o, -n/-A, --watch."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import click
import httpx
from click.shell_completion import CompletionItem

from rheostat.cli.client import DEFAULT_SERVER, ApiError
from rheostat.cli.common import (
    all_namespaces_option,
    client,
    err,
    fail,
    fetch,
    namespace_option,
    output_option,
    server_option,
)
from rheostat.cli.kinds import KINDS, Item, Kind, find_kind
from rheostat.cli.output import FORMATS, GAP, column_widths, dump, plain_lines, print_table
from rheostat.cli.stream import Waker


def complete_kind(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(k.plural) for k in KINDS if k.plural.startswith(incomplete.lower())]


def complete_name(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Names of the kind typed before, from the server when it answers within a second."""
    try:
        kind = find_kind(str(ctx.params.get("kind") or "canaries"))
        if kind.path is None:
            return []
        server = str(ctx.params.get("server") or DEFAULT_SERVER)
        items = httpx.get(f"{server.rstrip('/')}/api/v1{kind.path}", timeout=1.0).json()["items"]
    except Exception:  # no server, no completion: never an error in the middle of typing
        return []
    names = sorted({kind.short_name(i) for i in items})
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def not_found(kind: Kind, name: str, namespace: str | None) -> NoReturn:
    where = f" in namespace {namespace}" if namespace and kind.namespaced else ""
    fail(LookupError(f'{kind.name} "{name}" not found{where}'))


def select(kind: Kind, items: list[Item], name: str | None, namespace: str | None) -> list[Item]:
    """The items of `namespace` (all when None) named `name` (all when None); NAME may be NAMESPACE/NAME."""
    if name and "/" in name and kind.namespaced:
        namespace, _, name = name.partition("/")
    if namespace is not None and kind.namespaced:
        items = [i for i in items if kind.namespace(i) == namespace]
    if name is not None:
        items = [i for i in items if kind.short_name(i) == name]
    return items


def fetch_items(kind: Kind, server: str) -> list[Item]:
    if kind.path is None:
        fail(LookupError(f"{kind.plural} are not served by this server: {kind.not_served}"))
    items: list[Item] = fetch(server, kind.path)["items"]
    return items


def one(kind: Kind, items: list[Item], name: str, namespace: str | None) -> Item:
    """The one object NAME names; an error when none is, or when it is in several namespaces."""
    found = select(kind, items, name, namespace)
    if not found:
        not_found(kind, name, namespace)
    if len(found) > 1:
        spaces = ", ".join(sorted(str(kind.namespace(i)) for i in found))
        fail(LookupError(f'{kind.name} "{name}" is in several namespaces ({spaces}); name one with -n'))
    return found[0]


@dataclass
class Printer:
    """Prints items in one format; for a watch, only what changed since it last printed."""

    kind: Kind
    output: str
    show_namespace: bool
    seen: dict[str, Any]
    widths: list[int] | None = None

    def columns(self) -> tuple[str, ...]:
        cols = self.kind.columns + (self.kind.wide_columns if self.output == "wide" else ())
        return ("NAMESPACE", *cols) if self.show_namespace else cols

    def row(self, item: Item) -> list[str]:
        cells = self.kind.row(item) + (self.kind.wide_row(item) if self.output == "wide" else [])
        return [str(self.kind.namespace(item)), *cells] if self.show_namespace else cells

    def view(self, item: Item) -> Any:
        """What this format shows of an item; a watch prints an item again when it changes."""
        if self.output in ("table", "wide"):
            return self.row(item)
        if self.output == "name":
            return f"{self.kind.name}/{self.kind.key(item)}"
        return item

    def all(self, items: list[Item], single: bool, watching: bool = False) -> None:
        for it in items:
            self.seen[self.kind.key(it)] = self.view(it)
        if self.output in ("json", "yaml"):
            click.echo(dump(items[0] if single else items, self.output), nl=self.output == "json")
        elif self.output == "name":
            for it in items:
                click.echo(self.view(it))
        elif items and watching:  # plain lines from the start: the watch's rows align under this header
            rows = [self.row(it) for it in items]
            self.widths = column_widths(self.columns(), rows)
            for line in plain_lines(self.columns(), rows, self.widths):
                click.echo(line)
        elif items:
            print_table(self.columns(), [self.row(it) for it in items])
        else:
            scope = "" if self.show_namespace or not self.kind.namespaced else " in this namespace"
            err.print(f"No {self.kind.plural} found{scope}.", highlight=False)

    def changes(self, items: list[Item]) -> None:
        """Lines (or documents) for items new or changed since the last call, then for items gone."""
        changed = []
        for it in items:
            view = self.view(it)
            if self.seen.get(self.kind.key(it)) != view:
                self.seen[self.kind.key(it)] = view
                changed.append(it)
        present = {self.kind.key(it) for it in items}
        gone = {key: self.seen.pop(key) for key in [k for k in self.seen if k not in present]}
        if changed:
            self._print(changed)
        if gone:
            self._print_gone(gone)
        sys.stdout.flush()

    def _print_gone(self, gone: dict[str, Any]) -> None:
        """kubectl's habit: the last row again, marked; a watch event `DELETED` for json and yaml."""
        for view in gone.values():
            if self.output in ("table", "wide"):
                widths = self.widths or column_widths(self.columns(), [view])
                (line,) = plain_lines(self.columns(), [view], widths, header=False)
                click.echo(f"{line}{GAP}(deleted)")
            elif self.output == "name":
                click.echo(f"{view} deleted")
            else:
                event = {"type": "DELETED", "object": view}
                text = dump(event, self.output)
                click.echo(f"---\n{text}" if self.output == "yaml" else text, nl=self.output != "yaml")

    def _print(self, changed: list[Item]) -> None:
        if self.output in ("table", "wide"):
            rows = [self.row(it) for it in changed]
            header = self.widths is None
            if self.widths is None:
                self.widths = column_widths(self.columns(), rows)
            for line in plain_lines(self.columns(), rows, self.widths, header=header):
                click.echo(line)
        else:
            for it in changed:
                text = dump(it, self.output) if self.output in ("json", "yaml") else self.view(it)
                click.echo(f"---\n{text}" if self.output == "yaml" else text, nl=self.output != "yaml")


def watch(server: str, read: Iterator[list[Item]], printer: Printer) -> NoReturn:
    """Print changes until interrupted; `read` lists the items again each time it is asked."""
    with Waker(client(server)) as waker:
        try:
            for items in read:
                printer.changes(items)
                waker.wait()
        except KeyboardInterrupt:
            sys.exit(130)
    sys.exit(0)


@click.command("get", short_help="List objects of a kind, or show one.")
@click.argument("kind", shell_complete=complete_kind)
@click.argument("name", required=False, shell_complete=complete_name)
@namespace_option
@all_namespaces_option
@output_option(*FORMATS)
@click.option(
    "-w",
    "--watch",
    "watch_",
    is_flag=True,
    help="After the list, print each object again whenever it changes, until interrupted (Ctrl-C).",
)
@server_option
def get_cmd(
    kind: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    output: str,
    watch_: bool,
    server: str,
) -> None:
    """List objects of a kind, or show one by NAME (NAMESPACE/NAME, or NAME with -n).

    KIND is one of canaries (cd), workloads (wl), sources (gitrepository), kustomizations (ks), helmreleases
    (hr), helmrepositories, helmcharts, flags, violations. Singular and plural both work. Into a pipe the table is
    plain columns, as kubectl prints it. `-o json` and `-o yaml` print a list of objects, or the object NAME
    names; `-o name` prints KIND/NAMESPACE/NAME lines. `--watch` reads the server's change stream (/api/v1/stream) and
    lists again on each change, or every 2 seconds at the least; it prints what changed, and a deleted object
    once more, marked `(deleted)` (`-o json`/`yaml`: a `DELETED` watch event).

    \b
    Examples:
      rheostat get canaries
      rheostat get canary web -n apps -o yaml
      rheostat get ks -o wide
      rheostat get canaries -w
      rheostat get canaries -o name
    """
    try:
        k = find_kind(kind)
    except ValueError as exc:
        fail(exc)
    ns = None if all_namespaces else namespace
    items = fetch_items(k, server)
    items = [one(k, items, name, ns)] if name is not None else select(k, items, None, ns)
    printer = Printer(k, output, show_namespace=k.namespaced and ns is None and name is None, seen={})
    printer.all(items, single=name is not None, watching=watch_)
    if not watch_:
        return

    def again() -> Iterator[list[Item]]:
        while True:
            try:
                yield select(k, fetch_items(k, server), name, ns)
            except ApiError as exc:
                fail(exc)

    watch(server, again(), printer)
