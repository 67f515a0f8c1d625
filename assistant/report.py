"""What an assistant call leaves behind: one audit record (ids and figures, never the prompt,
the answer or an identifier) and the `collab_ai_` metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from assistant.firewall import FIREWALL_VERSION, Vault
from assistant.prompt import Built
from assistant.run import Outcome
from audit import AuditTrail
from graph_db.audit import AuditRecord, record_id
from graph_db.audit import Outcome as AuditOutcome
from graph_db.models import now_ms
from observability.metrics import (
    AI_FIRST_TOKEN,
    AI_REDACTIONS,
    AI_REQUESTS,
    AI_RESPONSE,
    AI_TOKENS,
)

if TYPE_CHECKING:
    from assistant.service import Question

ACTION = "assistant.call"
_AUDIT_OUTCOME = {"complete": AuditOutcome.ALLOWED, "truncated": AuditOutcome.ALLOWED,
                  "blocked": AuditOutcome.ALLOWED, "cancelled": AuditOutcome.ALLOWED,
                  "phi_blocked": AuditOutcome.DENIED, "failed": AuditOutcome.FAILED}


class Report:
    def __init__(self, trail: AuditTrail, backend: str) -> None:
        self.trail = trail
        self.backend = backend

    def refused(self) -> None:
        AI_REQUESTS.labels("refused").inc()

    def phi_blocked(self, question: Question, reply_id: str, vault: Vault, built: Built,
                    sha: str, found: list[str], model: str) -> None:
        """Stopped before anything left: the types found, never the values."""
        AI_REQUESTS.labels("phi_blocked").inc()
        AI_RESPONSE.labels("phi_blocked").observe(0)
        details = self._sent(vault, built, sha, model) | {"outcome": "phi_blocked",
                                                          "leakTypes": found}
        self._record(question, reply_id, AuditOutcome.DENIED, "AI_PHI_BLOCKED", details)

    def finished(self, question: Question, reply_id: str, vault: Vault, built: Built,
                 sha: str, outcome: Outcome, *, model: str, started: float,
                 citations: tuple[str, ...]) -> None:
        label = outcome.label
        total = time.monotonic() - started
        first = outcome.attempts.first_token_s
        AI_REQUESTS.labels(label).inc()
        AI_RESPONSE.labels(label).observe(total)
        if first is not None:
            AI_FIRST_TOKEN.observe(first)
        AI_TOKENS.labels("in").inc(outcome.tokens_in or 0)
        AI_TOKENS.labels("out").inc(outcome.tokens_out or 0)
        for kind, count in vault.counts.items():
            AI_REDACTIONS.labels(kind).inc(count)
        details = self._sent(vault, built, sha, model) | {
            "modelVersion": outcome.model_version,
            "tokensIn": outcome.tokens_in, "tokensOut": outcome.tokens_out,
            "firstTokenMs": round(first * 1000) if first is not None else None,
            "totalMs": round(total * 1000), "finishReason": outcome.finish_reason,
            "outcome": label, "retries": outcome.attempts.retries,
            "citations": list(citations), "cancelledBy": outcome.cancelled,
            "phiOnWire": sorted(set(outcome.phi)) or None}
        self._record(question, reply_id, _AUDIT_OUTCOME[label], outcome.code, details)

    def _sent(self, vault: Vault, built: Built, sha: str, model: str) -> dict[str, Any]:
        return {"backend": self.backend, "model": model, "messageIds": list(built.sent_ids),
                "messageCount": len(built.sent_ids), "droppedForSize": built.dropped,
                "redactions": dict(sorted(vault.counts.items())),
                "firewallVersion": FIREWALL_VERSION,
                "payloadSha256": sha}

    def _record(self, question: Question, reply_id: str, outcome: AuditOutcome,
                code: str | None, details: dict[str, Any]) -> None:
        at_ms = now_ms()
        self.trail.record(AuditRecord(
            id=record_id(at_ms), at_ms=at_ms, action=ACTION, outcome=outcome,
            actor_id=question.asker_id, actor_role=question.asker_role,
            object_type="AssistantReply", object_id=reply_id, room_id=question.room_id,
            code=code, request_id=question.request_id,
            details=orjson.dumps(details).decode()))
