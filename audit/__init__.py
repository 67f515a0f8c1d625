"""The audit trail (README "Audit trail"): who read or changed what, and who was refused."""

from audit.sessions import MemorySessions, RedisSessions, SessionLedger
from audit.sinks import GraphSink, JsonLinesSink
from audit.trail import AuditSink, AuditTrail

__all__ = ["AuditSink", "AuditTrail", "GraphSink", "JsonLinesSink", "MemorySessions",
           "RedisSessions", "SessionLedger"]
