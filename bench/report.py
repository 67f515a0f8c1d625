"""What the benches share in their reports: the audit trail's cost and the machine's load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUDIT_GOAL = 0.10  # the trail may cost at most 10 % (hardening issue)


@dataclass(frozen=True)
class AuditCost:
    """One figure of ours measured with the trail on and off in the same run."""

    bench: str  # "HTTP", "fan-out"
    workload: str
    metric: str
    on: float
    off: float
    higher_is_better: bool  # throughput; latency is lower-is-better

    @property
    def ratio(self) -> float:
        return self.on / self.off if self.off else float("nan")

    @property
    def cost(self) -> float:
        """What the trail costs: the share of throughput lost (1 - on/off), or the latency
        added (on/off - 1). Negative: the trail-on run was the faster one (noise)."""
        return 1 - self.ratio if self.higher_is_better else self.ratio - 1

    @property
    def met(self) -> bool:
        return self.cost <= AUDIT_GOAL

    def verdict(self) -> str:
        if self.met:
            return "met"
        return f"**MISSED** by {100 * (self.cost - AUDIT_GOAL):.1f} points"


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def measured(costs: list[AuditCost]) -> list[AuditCost]:
    """Only figures both runs produced (a failed run has none)."""
    return [c for c in costs if c.on > 0 and c.off > 0]


def audit_table(costs: list[AuditCost]) -> str:
    rows = [f"| bench | workload | figure | trail on | trail off | on/off | cost "
            f"| goal: cost ≤ {AUDIT_GOAL:.0%} |",
            "|---|---|---|---:|---:|---:|---:|---|"]
    for c in costs:
        rows.append(f"| {c.bench} | {c.workload} | {c.metric} | {_figure(c.on)} "
                    f"| {_figure(c.off)} | {c.ratio:.2f}× | {100 * c.cost:+.1f} % "
                    f"| {c.verdict()} |")
    return "\n".join(rows)


def audit_summary(costs: list[AuditCost]) -> str:
    if not costs:
        return "audit trail cost: not measured"
    missed = [c for c in costs if not c.met]
    if not missed:
        return (f"audit trail cost: goal (≤ {AUDIT_GOAL:.0%}) met by all {len(costs)} "
                "figures")
    worst = max(missed, key=lambda c: c.cost)
    return (f"audit trail cost: goal (≤ {AUDIT_GOAL:.0%}) MISSED by {len(missed)} of "
            f"{len(costs)} figures; worst {worst.bench} {worst.workload} {worst.metric}: "
            f"{100 * worst.cost:+.1f} %, {100 * (worst.cost - AUDIT_GOAL):.1f} points over")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
