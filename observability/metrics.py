"""The service's Prometheus metrics (one registry), and the /metrics endpoint.

Several processes (PROMETHEUS_MULTIPROC_DIR set before start): prometheus_client then keeps
every value in a file of that directory per process, and /metrics of any process reads them
all (MultiProcessCollector): counters and histograms summed, gauges summed over the live
processes (livesum; a stopping process removes its gauge files, `forget_this_process`).

Garbage-collection pauses (`GcPauses`): timed from `gc.callbacks` once this module is
imported, exposed like the `process_*` figures only by a process answering for itself.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import hmac
import os
from collections.abc import Callable, Iterator
from time import perf_counter

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

# prometheus_client chose its value storage from this variable when it was imported: read
# it the same way, so the endpoint exposes what the metrics actually write.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
REGISTRY = CollectorRegistry()
# No `*_created` series: a timestamp per counter and histogram that nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]

TYPES = ("query", "mutation", "subscription", "unknown")  # unknown: no operation resolved
OUTCOMES = ("ok", "error", "refused")  # refused: answered before anything ran
RATE_LIMIT_KINDS = ("operations", "connections", "messages", "message_size", "subscriptions",
                    "signals", "call_stats")
# Close codes of the README's table, those of RFC 6455 a socket can end with here, and the
# 4400..4430 block of graphql-transport-ws; anything else is "other" (a bounded label set).
CLOSE_CODES = (1000, 1001, 1005, 1006, 1008, 1009, 1011, 1012, 1013,
               4400, 4401, 4403, 4406, 4408, 4409, 4429, 4430)
_CLOSE_LABELS = {code: str(code) for code in (*CLOSE_CODES, *range(4400, 4431))}

ROOMS_CREATED = Counter("collab_rooms_created", "Rooms created.", registry=REGISTRY)
MESSAGES = Counter("collab_messages", "New messages stored (idempotent replays not counted).",
                   registry=REGISTRY)
ACTIVE_USERS = Gauge("collab_active_users", "Distinct users with at least one open "
                     "WebSocket, per process (summed over processes).",
                     multiprocess_mode="livesum", registry=REGISTRY)
WS_CONNECTIONS = Gauge("collab_ws_connections", "Open graphql-transport-ws sockets.",
                       multiprocess_mode="livesum", registry=REGISTRY)
WS_DISCONNECTS = Counter("collab_ws_disconnects", "WebSockets closed, by close code.",
                         ["code"], registry=REGISTRY)
OPERATIONS = Counter("collab_graphql_operations", "GraphQL operations, by type and outcome.",
                     ["type", "outcome"], registry=REGISTRY)
DURATION = Histogram("collab_graphql_duration_seconds", "Time to answer a query or mutation, "
                     "or to start (or refuse) a subscription.", ["type"], registry=REGISTRY)
FANOUT_DELIVERIES = Counter("collab_fanout_deliveries", "Frames the room streams handed to "
                            "subscribers' sockets.", registry=REGISTRY)
DB_QUERY = Histogram("collab_db_query_seconds", "Graph database statements and transactions "
                     "(each attempt), by access mode.", ["access"], registry=REGISTRY,
                     buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
DB_RETRIES = Counter("collab_db_retries", "Graph database attempts retried, by reason: a write "
                     "conflict (or deadlock), or the server unreachable or restarting.",
                     ["reason"], registry=REGISTRY)
SEND_GROUPS = Histogram("collab_message_group_size", "Messages per sendMessage transaction "
                        "(group commit: a room's concurrent sends written together).",
                        registry=REGISTRY, buckets=(1, 2, 4, 8, 16, 32, 64))
RATE_LIMITED = Counter("collab_rate_limited", "Refusals by the rate and WebSocket limits.",
                       ["kind"], registry=REGISTRY)
AUDIT_WRITTEN = Counter("collab_audit_records", "Audit records written, by sink.", ["sink"],
                        registry=REGISTRY)
AUDIT_PENDING = Gauge("collab_audit_pending", "Audit records waiting for their sink (grows "
                      "while the database is away).", ["sink"], multiprocess_mode="livesum",
                      registry=REGISTRY)
AUDIT_DROPPED = Counter("collab_audit_dropped", "Audit records lost: a sink stayed behind by "
                        "more than 100,000 records (an incident).", ["sink"], registry=REGISTRY)

# Calls (README "Calls"): the seed's "WebRTC connection success rate" is
# collab_webrtc_connections_total{outcome="connected"} over all outcomes, as clients report them.
WEBRTC_CONNECTIONS = Counter("collab_webrtc_connections", "Peer connections reported by "
                             "clients (reportCallStats), by outcome and the local candidate's "
                             "type.", ["outcome", "candidate"], registry=REGISTRY)
WEBRTC_RTT = Histogram("collab_webrtc_round_trip_seconds", "Round-trip times clients report "
                       "for their connected peers.", registry=REGISTRY,
                       buckets=(.01, .025, .05, .1, .15, .25, .5, 1, 2))
WEBRTC_PACKET_LOSS = Histogram("collab_webrtc_packet_loss_ratio", "Packets lost over packets "
                               "expected, as reported.", registry=REGISTRY,
                               buckets=(0, .001, .01, .02, .05, .1, .2, .5))
CALL_PARTICIPANTS = Gauge("collab_call_participants", "Participants in calls (joins counted "
                          "where they happened, leaves where they were noticed: sum over "
                          "instances).", multiprocess_mode="livesum", registry=REGISTRY)
SCREEN_SHARES = Counter("collab_screen_share_changes", "Screen shares started, taken over, "
                        "re-tuned and stopped, by what happened and the quality's preset "
                        "(custom: not a preset).", ["change", "preset"], registry=REGISTRY)
SCREEN_SHARE_FPS = Histogram("collab_screen_share_frame_rate", "Frame rate of screen shares, "
                             "as their viewers report it.", registry=REGISTRY,
                             buckets=(1, 3, 5, 10, 15, 20, 25, 30))
SCREEN_SHARE_HEIGHT = Histogram("collab_screen_share_height_pixels", "Height of screen "
                                "shares as their viewers receive them.", registry=REGISTRY,
                                buckets=(180, 360, 540, 720, 1080))
SCREEN_SHARE_BITRATE = Histogram("collab_screen_share_bitrate_kbps", "Bitrate of screen shares "
                                 "as their viewers receive them.", registry=REGISTRY,
                                 buckets=(100, 200, 400, 800, 1500, 2500, 5000))
NOTIFICATIONS = Counter("collab_notifications", "In-app notifications created (each once per "
                        "cause, recipient and kind), by kind.", ["kind"], registry=REGISTRY)
FILE_UPLOADS = Counter("collab_file_uploads", "Uploads, by outcome: stored (scanned clean or "
                       "unscanned), pending (waiting for the scanner), infected, refused_type.",
                       ["outcome"], registry=REGISTRY)
FILE_SCANS = Counter("collab_file_scans", "Scanner verdicts, by result (clean, infected, "
                     "unavailable).", ["result"], registry=REGISTRY)
FILE_DOWNLOADS = Counter("collab_file_downloads", "Download requests, by outcome (served, "
                         "partial, refused, tampered).", ["outcome"], registry=REGISTRY)
EMAILS = Counter("collab_notification_emails", "Digest emails, by outcome: sent, delayed (the "
                 "mail server unreachable: retried), failed (refused for good).", ["outcome"],
                 registry=REGISTRY)
RECORDINGS = Counter("collab_recording_files", "Recorded track files, by whether any frame "
                     "decoded from them (an empty file is logged as an error).", ["outcome"],
                     registry=REGISTRY)

# The assistant (README "Assistant"): the seed's "AI response latency".
AI_OUTCOMES = ("complete", "truncated", "blocked", "cancelled", "failed", "phi_blocked",
               "refused")
AI_RESPONSE = Histogram("collab_ai_response_seconds", "Assistant answers, from the request to "
                        "the final state, by outcome.", ["outcome"], registry=REGISTRY,
                        buckets=(.25, .5, 1, 2, 4, 8, 15, 30, 60, 120))
AI_FIRST_TOKEN = Histogram("collab_ai_time_to_first_token_seconds", "From the request to the "
                           "first text of the answer.", registry=REGISTRY,
                           buckets=(.1, .25, .5, 1, 2, 4, 8, 15, 30))
AI_REQUESTS = Counter("collab_ai_requests", "askAssistant calls, by outcome (refused: the "
                      "assistant's limits; phi_blocked: the firewall stopped it).",
                      ["outcome"], registry=REGISTRY)
AI_TOKENS = Counter("collab_ai_tokens", "Tokens the model reported, by direction (in, out).",
                    ["direction"], registry=REGISTRY)
AI_REDACTIONS = Counter("collab_ai_phi_redactions", "Identifiers replaced by placeholders "
                        "before a request left, by type.", ["type"], registry=REGISTRY)
AI_INFLIGHT = Gauge("collab_ai_inflight", "Answers streaming now.",
                    multiprocess_mode="livesum", registry=REGISTRY)
AI_REDACTION_TYPES = ("PERSON", "EMAIL", "PHONE", "DATE", "MRN", "ADDRESS", "AGE")


# Every label value exists from the start (at 0): rate() and absent() need no first event.
for _type in TYPES:
    DURATION.labels(_type)
    for _outcome in OUTCOMES:
        OPERATIONS.labels(_type, _outcome)
for _kind in RATE_LIMIT_KINDS:
    RATE_LIMITED.labels(_kind)
for _code in CLOSE_CODES:
    WS_DISCONNECTS.labels(str(_code))
for _candidate in ("host", "srflx", "prflx", "relay", "unknown"):
    for _outcome in ("connected", "failed"):
        WEBRTC_CONNECTIONS.labels(_outcome, _candidate)
for _outcome in AI_OUTCOMES:
    AI_RESPONSE.labels(_outcome)
    AI_REQUESTS.labels(_outcome)
for _direction in ("in", "out"):
    AI_TOKENS.labels(_direction)
for _type in AI_REDACTION_TYPES:
    AI_REDACTIONS.labels(_type)
DB_READ, DB_WRITE = DB_QUERY.labels("read"), DB_QUERY.labels("write")
DB_RETRIED_CONFLICT, DB_RETRIED_UNAVAILABLE = (DB_RETRIES.labels("conflict"),
                                               DB_RETRIES.labels("unavailable"))


class GcPauses(Collector):
    """How long each collection of the cyclic garbage collector stopped this process, by
    generation, timed from gc.callbacks' start and stop (time.perf_counter: wall time, the
    time the event loop stood still). Exposed at scrape time as `collab_gc_pause_seconds`
    (a histogram) and `collab_gc_pause_max_seconds`: the longest pause since the process
    started. That gauge only ever rises, so any number of scrapers read the same figure; the
    longest pause within an interval is the gauge's new value when it rose during it, else it
    lies within the highest histogram bucket that grew (bench.gcpause does this).

    The callback touches no prometheus_client metric: a collection runs inside whatever
    allocation triggered it, possibly while this thread holds one of prometheus_client's
    value locks (non-reentrant; one per process with PROMETHEUS_MULTIPROC_DIR), and an
    observe() there would deadlock. It adds to preallocated lists instead."""

    BUCKETS = (.0005, .001, .0025, .005, .01, .015, .02, .03, .05, .1, .25, .5, 1.0)
    GENERATIONS = 3

    def __init__(self) -> None:
        self._started = 0.0
        # Per generation, pauses per bucket (not cumulative; the last: above every bound).
        self.counts = [[0] * (len(self.BUCKETS) + 1) for _ in range(self.GENERATIONS)]
        self.sums = [0.0] * self.GENERATIONS
        self.longest = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        # Collections never overlap (CPython runs one at a time): one start slot suffices.
        if phase == "start":
            self._started = perf_counter()
            return
        if not self._started:
            return  # installed during a collection: its start was not seen
        pause = perf_counter() - self._started
        generation = min(info.get("generation", 2), self.GENERATIONS - 1)
        self.counts[generation][bisect.bisect_left(self.BUCKETS, pause)] += 1
        self.sums[generation] += pause
        self.longest = max(self.longest, pause)

    def collect(self) -> Iterator[Metric]:
        pauses = HistogramMetricFamily(
            "collab_gc_pause_seconds", "Pauses of the garbage collector (each collection, "
            "start to stop), by generation.", labels=["generation"])
        bounds = [*map(floatToGoString, self.BUCKETS), "+Inf"]
        for generation in range(self.GENERATIONS):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, list(self.counts[generation]), strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            pauses.add_metric([str(generation)], buckets, self.sums[generation])
        yield pauses
        yield GaugeMetricFamily("collab_gc_pause_max_seconds", "The longest garbage "
                                "collector pause since the process started.", self.longest)


GC_PAUSES = GcPauses()
if MULTIPROCESS_DIR is None:  # process figures make no sense summed over processes
    ProcessCollector(registry=REGISTRY)
    REGISTRY.register(GC_PAUSES)
    if GC_PAUSES.callback not in gc.callbacks:
        gc.callbacks.append(GC_PAUSES.callback)


def close_code_label(code: int) -> str:
    return _CLOSE_LABELS.get(code, "other")


def rate_limited(kind: str) -> None:
    RATE_LIMITED.labels(kind).inc()


class ActiveUsers:
    """Distinct users with an open socket in this process (the gauge follows the map)."""

    def __init__(self) -> None:
        self._sockets: dict[str, int] = {}

    def add(self, user_id: str) -> None:
        count = self._sockets.get(user_id, 0)
        self._sockets[user_id] = count + 1
        if count == 0:
            ACTIVE_USERS.inc()

    def remove(self, user_id: str) -> None:
        count = self._sockets.get(user_id, 0)
        if count > 1:
            self._sockets[user_id] = count - 1
        elif count == 1:
            del self._sockets[user_id]
            ACTIVE_USERS.dec()

    def __len__(self) -> int:
        return len(self._sockets)


active_users = ActiveUsers()


def forget_this_process() -> None:
    """A stopping process's gauges stop counting in the other processes' sums."""
    if MULTIPROCESS_DIR is not None:
        multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
            os.getpid(), MULTIPROCESS_DIR)


def exposition(accept: str | None) -> tuple[bytes, str]:
    """Every metric in the format the scraper asked for (Prometheus text, OpenMetrics)."""
    encode: Callable[[CollectorRegistry], bytes]
    encode, content_type = choose_encoder(accept or "")
    if MULTIPROCESS_DIR is None:
        return encode(REGISTRY), content_type
    merged = CollectorRegistry()  # the metrics themselves must not be registered here
    multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
        merged, path=MULTIPROCESS_DIR)
    return encode(merged), content_type


class MetricsEndpoint:
    """GET /metrics; with METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""

    def __init__(self, token: SecretStr | None) -> None:
        self.token = None if token is None else token.get_secret_value().encode()

    async def handle(self, request: Request) -> Response:
        if not self._authorized(request.headers.get("authorization")):
            return Response("metrics need the bearer token (METRICS_TOKEN)\n", status_code=401,
                            headers={"www-authenticate": 'Bearer realm="metrics"'},
                            media_type="text/plain")
        # Several processes: the files of every process are read; off the event loop.
        body, content_type = await asyncio.to_thread(exposition, request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"cache-control": "no-store"})

    def _authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        scheme, _, presented = (header or "").partition(" ")
        # Constant time: the comparison says nothing about how much of a guess was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self.token)
