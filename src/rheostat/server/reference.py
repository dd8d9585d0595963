"""docs/api.md, written from the API's own description (the OpenAPI operations) so that it cannot drift.

    python -m rheostat.server.reference > docs/api.md

tests/test_api_reference.py fails when the committed file differs from what this prints, and
tests/test_api_routes.py when a route the app serves is not described.
"""

from __future__ import annotations

from typing import Any

from rheostat.server.dashboard.openapi import OPERATIONS

HEAD = """# The HTTP API

Generated from the code by `python -m rheostat.server.reference > docs/api.md`: do not edit by hand (a test
compares this file with what the command prints). The same description is served as OpenAPI 3.1 at
`/api/v1/openapi.json`.

Reading is open on loopback; every POST needs `Authorization: Bearer <token>` (the token is in
`<data-dir>/token`). Bound to another address, every request needs it. Errors are JSON: `{"error": "..."}`.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _parameters(op: dict[str, Any]) -> list[str]:
    rows = []
    for p in op.get("parameters", []):
        schema = p.get("schema", {})
        kind = schema.get("type", "")
        if "enum" in schema:
            kind = " \\| ".join(f"`{v}`" for v in schema["enum"])
        rows.append(f"| `{p['name']}` | {p.get('in', '')} | {kind} | {_cell(p.get('description', ''))} |")
    if not rows:
        return []
    return ["| parameter | in | type | meaning |", "|---|---|---|---|", *rows, ""]


def _responses(op: dict[str, Any]) -> list[str]:
    rows = [
        f"| {code} | {_cell(str(answer.get('description', '')))} |"
        for code, answer in sorted(op.get("responses", {}).items())
    ]
    return ["| status | answer |", "|---|---|", *rows, ""] if rows else []


def markdown() -> str:
    out = [HEAD]
    for (path, method), op in sorted(OPERATIONS.items()):
        out.append(f"## {method.upper()} `{path}`\n")
        out.append(_cell(op.get("summary", "")) + "\n")
        if op.get("description"):
            out.append(_cell(op["description"]) + "\n")
        out.extend(_parameters(op))
        out.extend(_responses(op))
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
