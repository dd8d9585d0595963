"""How the CLI prints: tables as kubectl prints them, JSON, YAML, names.

Into a pipe or a file a table is plain columns (no box, no colour, no wrapping), so `grep`, `awk` and `cut`
work on it; in a terminal it is a rich table that fits the window.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import click
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "wide", "json", "yaml", "name")
GAP = "   "  # kubectl's column gap


def is_terminal() -> bool:
    return sys.stdout.isatty()


def cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    return " ".join(text.split())  # one row is one line, whatever the message holds


def plain_lines(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: list[int] | None = None,
    header: bool = True,
) -> list[str]:
    """Aligned columns; `widths` (from an earlier call) keeps a watch's rows under its header."""
    cells = [[cell(c) for c in row] for row in rows]
    widths = widths or column_widths(columns, cells)
    out = []
    for row in [list(columns), *cells] if header else cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        out.append(GAP.join([*padded, row[-1]]).rstrip())
    return out


def column_widths(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    cells = [[cell(c) for c in row] for row in rows]
    return [max([len(col), *(len(r[i]) for r in cells)]) for i, col in enumerate(columns)]


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
    if not is_terminal():
        if title:
            click.echo(title)
        for line in plain_lines(columns, rows):
            click.echo(line)
        return
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col, no_wrap=col not in ("MESSAGE", "MESSAGES"), overflow="fold")
    for row in rows:
        table.add_row(*(cell(c) for c in row))
    Console(highlight=False).print(table)


def dump(data: Any, output: str) -> str:
    if output == "yaml":
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))
    return json.dumps(data, indent=2)


def age(ts: float | None, now: float | None = None) -> str:
    """kubectl's AGE: the largest unit or two, `5m`, `2h3m`, `4d`."""
    if not ts:
        return "-"
    s = max(0, int((now or time.time()) - ts))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m}m" if m and h < 6 else f"{h}h"
    return f"{h // 24}d"


def clock(ts: float) -> str:
    """A local time of day in 24-hour form, as every line of the CLI prints it."""
    return time.strftime("%H:%M:%S", time.localtime(ts))
