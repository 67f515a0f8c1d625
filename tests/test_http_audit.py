"""The GraphQL-over-HTTP reference audit: graphql-http's `serverAudits` (the npm package,
pinned in tests/http_audit/package-lock.json, installed by `make test` with `npm ci`) against
the live service, without a token, as any client that only speaks the spec would call it.

graphql-http names each audit by its level: 13 MUST, and 48 more, of which 23 SHOULD and 25
MAY. Every one passes."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.harness import LiveServer

AUDIT = Path(__file__).resolve().parent / "http_audit"
LEVELS = ("MUST", "SHOULD", "MAY")


def run_audit(url: str) -> list[dict[str, str]]:
    if not (AUDIT / "node_modules" / "graphql-http").is_dir():
        pytest.fail("graphql-http is not installed: `make test` runs `npm ci` in "
                    f"{AUDIT.relative_to(AUDIT.parent.parent)}")
    done = subprocess.run(["node", "audit.mjs", url], cwd=AUDIT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    results: list[dict[str, str]] = json.loads(done.stdout)
    return results


def test_graphql_over_http_audit(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    results = run_audit(f"{live.url}/graphql")
    total = Counter(r["name"].split()[0] for r in results)
    passed = Counter(r["name"].split()[0] for r in results if r["status"] == "ok")
    failed = [f"{r['id']} {r['name']}: {r.get('reason')}" for r in results
              if r["status"] != "ok"]
    version = json.loads((AUDIT / "node_modules/graphql-http/package.json").read_text())
    lines = [f"GraphQL over HTTP audit (graphql-http {version['version']}): "
             + ", ".join(f"{level} {passed[level]}/{total[level]}" for level in LEVELS)
             + f"; SHOULD and MAY together {passed['SHOULD'] + passed['MAY']}/"
             f"{total['SHOULD'] + total['MAY']}",
             "MAY items met:"]
    lines += [f"  {r['id']} {r['name']}" for r in results
              if r["name"].startswith("MAY") and r["status"] == "ok"]
    with capsys.disabled():
        print("\n" + "\n".join(lines + [f"FAILED {f}" for f in failed]))
    assert failed == []
    assert (passed["MUST"], total["MUST"]) == (13, 13)
    assert (passed["SHOULD"] + passed["MAY"], total["SHOULD"] + total["MAY"]) == (48, 48)
