"""OpenTelemetry traces from a real `python -m app` process with OTEL_EXPORTER_OTLP_ENDPOINT
set, received by a local OTLP/HTTP collector (a small HTTP server here, decoding
ExportTraceServiceRequest with opentelemetry-proto): a span per operation named after it,
resolver spans under it, and no document text or argument value in any span."""

from __future__ import annotations

import gzip
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import SECRET, people_at
from tests.personas import make_room
from tests.processes import Cluster, running_cluster
from tests.wsclient import connect


class Collector:
    """Accepts POST /v1/traces (protobuf, maybe gzip/deflate): keeps the raw bodies and
    the spans with their resource attributes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                encoding = self.headers.get("content-encoding", "")
                body = (gzip.decompress(raw) if encoding == "gzip" else
                        zlib.decompress(raw) if encoding == "deflate" else raw)
                ok = self.path == "/v1/traces"
                if ok:
                    collector.receive(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            self.bodies.append(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value
                            for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def named(self, name: str, timeout: float = 15.0) -> tuple[dict[str, Any], Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [pair for pair in self.spans if pair[1].name == name]
            if found:
                return found[0]
            time.sleep(0.05)
        with self.lock:
            names = sorted({span.name for _, span in self.spans})
        raise AssertionError(f"no span {name!r} within {timeout}s; got {names}")


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    running = Collector()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, collector: Collector) -> Iterator[Cluster]:
    env = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET,
           "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "collab-test",
           "OTEL_BSP_SCHEDULE_DELAY": "100"}  # the SDK's batch delay (5 s by default)
    with running_cluster(tmp_path_factory.mktemp("tracing"), names=("traced",),
                         env=env) as running:
        yield running


def attributes(span: Span) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


async def test_operations_are_traced_without_their_input(
        cluster: Cluster, collector: Collector, tmp_path: Path) -> None:
    service = cluster.services["traced"]
    secret = f"content-{uuid.uuid4().hex}"
    async with people_at(service.url, tmp_path) as people:
        host = people.make_user("doctor")
        await host.gql("query TracedMe { me { id displayName } }")
        room = (await make_room(host))["id"]
        await host.gql(f'mutation TracedSend {{ sendMessage(roomId: "{room}", '
                       f'input: {{content: "{secret}"}}) {{ id }} }}')
        await host.gql("mutation TracedVar($room: ID!, $c: String!) { sendMessage("
                       "roomId: $room, input: {content: $c}) { id } }", room=room, c=secret)
        async with await connect(service.ws_url, host.token) as ws:
            await ws.subscribe("q", "query TracedOverWs { me { id } }")
            assert (await ws.next_message(id="q"))["type"] == "next"

    resource, operation = collector.named("GraphQL Query: TracedMe")
    assert resource["service.name"] == "collab-test"
    assert operation.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert attributes(operation)["graphql.operation.type"] == "query"
    _, resolver = collector.named("GraphQL Resolving: me")
    assert resolver.trace_id == operation.trace_id
    assert resolver.parent_span_id == operation.span_id
    collector.named("GraphQL Query: TracedSend")
    collector.named("GraphQL Query: TracedVar")
    collector.named("GraphQL Query: TracedOverWs")
    with collector.lock:
        everything = b"".join(collector.bodies)
        keys = {a.key for _, span in collector.spans for a in span.attributes}
    assert secret.encode() not in everything  # neither the document nor the arguments
    assert "query" not in keys and not any(k.startswith("graphql.param") for k in keys)
