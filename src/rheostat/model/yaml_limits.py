"""YAML from a repository, a secret file or a policy, loaded within bounds.

An alias copies its anchor's whole subtree, so 644 bytes of nested aliases expand to millions of nodes (the
"billion laughs"). libyaml's composer also recurses in C once per nesting level: a deep enough document
crashes the process. So the events are scanned first, without building anything, and a document past
MAX_ALIASES aliases, MAX_ALIAS_NODES nodes added by aliases, or MAX_DEPTH levels of nesting is refused at
the line where it passes the bound. Aliases used normally (anchors for shared labels) stay well inside.
"""

from __future__ import annotations

from typing import Any, cast

import yaml
from yaml import events

SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster

MAX_DEPTH = 100  # nested collections; Kubernetes-style objects rarely pass 20
MAX_ALIASES = 1000  # per file
MAX_ALIAS_NODES = 100_000  # nodes the aliases of a file add once expanded


class YamlLimitError(yaml.MarkedYAMLError):
    """A document refused for its size once expanded or its depth; `problem_mark` is where."""


def safe_load_all(text: str) -> list[Any]:
    """The documents of `text` (None ones left out); yaml.YAMLError, or YamlLimitError past a bound."""
    check_limits(text)
    return [d for d in yaml.load_all(text, Loader=SafeLoader) if d is not None]


def safe_load(text: str) -> Any:
    """The one document of `text` (None for an empty one), within the same bounds."""
    check_limits(text)
    return yaml.load(text, Loader=SafeLoader)


def check_limits(text: str) -> None:
    sizes: dict[str, int] = {}  # anchor -> nodes of its subtree
    stack: list[tuple[list[int], str | None]] = []  # open collections: ([nodes so far], anchor)
    open_anchors: set[str] = set()
    aliases = added = 0
    for event in yaml.parse(text, Loader=SafeLoader):
        if isinstance(event, events.ScalarEvent):
            if event.anchor:
                sizes[event.anchor] = 1
            if stack:
                stack[-1][0][0] += 1
        elif isinstance(event, events.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                _refuse(event, f"nesting deeper than {MAX_DEPTH} levels")
            stack.append(([1], event.anchor))
            if event.anchor:
                open_anchors.add(event.anchor)
        elif isinstance(event, events.CollectionEndEvent):
            (count,), anchor = stack.pop()
            if anchor:
                sizes[anchor] = count
                open_anchors.discard(anchor)
            if stack:
                stack[-1][0][0] += count
        elif isinstance(event, events.AliasEvent):
            if event.anchor in open_anchors:
                _refuse(event, f"alias *{event.anchor} refers to a node that contains it")
            size = sizes.get(event.anchor or "")
            if size is None:
                continue  # an undefined alias: the loader says so, with its line
            aliases += 1
            added += size
            if aliases > MAX_ALIASES:
                _refuse(event, f"more than {MAX_ALIASES} aliases in one file")
            if added > MAX_ALIAS_NODES:
                _refuse(event, f"aliases expand the file by more than {MAX_ALIAS_NODES:,} nodes")
            if stack:
                stack[-1][0][0] += size
        elif isinstance(event, events.DocumentStartEvent):
            sizes.clear()


def _refuse(event: events.Event, problem: str) -> None:
    mark = cast("yaml.Mark | None", event.start_mark)  # libyaml's Mark has the same line and column
    raise YamlLimitError(problem=f"refused: {problem}", problem_mark=mark)
