"""`python -m schema.contract`: the exported schema against the public contract.

Breaks are allowed only for what later issues build (PENDING); anything else fails, and so
does a PENDING entry that is no longer missing (so the list only shrinks).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT.parent / "shared" / "tools" / "contract_check.py"

PENDING = frozenset(Path(__file__).with_name("contract_pending.txt").read_text().split("\n"))


def main() -> int:
    if not CHECKER.exists():
        print(f"contract: checker not found at {CHECKER}; skipped")
        return 0
    out = subprocess.run([sys.executable, str(CHECKER), str(ROOT / "schema.graphql")],
                         capture_output=True, text=True, check=False).stdout.splitlines()
    breaks = {line for line in out[:-1] if line}
    unexpected = sorted(breaks - PENDING)
    done = sorted(p for p in PENDING - breaks if p)
    for line in unexpected:
        print(f"contract break: {line}")
    for line in done:
        print(f"no longer pending (remove from contract_pending.txt): {line}")
    print(out[-1] if out else "contract: no output")
    return 1 if unexpected or done else 0


if __name__ == "__main__":
    sys.exit(main())
