"""The README's error table is the list of every `extensions.code` the service emits: the
source is scanned (its syntax tree, not its text) for the ways a code is written, and each
must have its row; each row must name a code that is emitted.

Where codes are written: `code = "X"` in the body of a ServiceError subclass; `"code": "X"` in
a dict literal (extensions={"code": ...} included); "X" passed to coded(), or to the room
streams' _end()/on_end() (which end a subscription with that code); and the codes that
resolvers/extensions.py's _code_for returns for graphql-core's own errors."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", "node_modules", "tests", "data", "bench"}
CODE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{4,}")
CODE_CALLS = {"coded", "_end", "on_end"}


def sources() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        if not SKIP & set(path.relative_to(ROOT).parts):
            yield path


def _string(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
            CODE.fullmatch(node.value):
        return node.value
    return None


def _service_error_classes(trees: list[ast.Module]) -> set[str]:
    """ServiceError and every class deriving from it, across the scanned files."""
    found = {"ServiceError"}
    classes = [n for tree in trees for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    grew = True
    while grew:
        grew = False
        for cls in classes:
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                     for b in cls.bases}
            if cls.name not in found and bases & found:
                found.add(cls.name)
                grew = True
    return found


def _codes_in(tree: ast.Module, service_errors: set[str]) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in service_errors:
            for item in node.body:
                if isinstance(item, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "code" for t in item.targets):
                    yield from filter(None, [_string(item.value)])
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "code":
                    yield from filter(None, [_string(value)])
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in CODE_CALLS:
                yield from filter(None, map(_string, node.args))
        elif isinstance(node, ast.FunctionDef) and node.name == "_code_for":
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return):
                    yield from filter(None, [_string(ret.value)])


def emitted_codes() -> set[str]:
    trees = [ast.parse(path.read_text(), str(path)) for path in sources()]
    service_errors = _service_error_classes(trees)
    return {code for tree in trees for code in _codes_in(tree, service_errors)}


def readme_codes() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))


def test_the_scan_finds_the_codes_it_must() -> None:
    # If this fails the scan is broken (not the table): these are written in each of the ways.
    codes = emitted_codes()
    assert {"UNAUTHENTICATED", "SERVICE_UNAVAILABLE", "PERSISTED_QUERY_NOT_FOUND",  # classes
            "BAD_USER_INPUT",  # a dict literal in transport/ws.py, and _code_for
            "FORBIDDEN",  # _end(..., "FORBIDDEN", ...)
            "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"} <= codes  # _code_for


def test_every_emitted_code_is_in_the_readme_table() -> None:
    missing = emitted_codes() - readme_codes()
    assert not missing, f"add these codes to the README's error table: {sorted(missing)}"


def test_every_code_in_the_readme_table_is_emitted() -> None:
    stale = readme_codes() - emitted_codes()
    assert not stale, f"the README's error table lists codes nothing emits: {sorted(stale)}"
