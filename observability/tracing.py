"""OpenTelemetry traces, only when OTEL_EXPORTER_OTLP_ENDPOINT is set: a TracerProvider of
the app's own (not the global one: tests run several apps in one process), spans batched to
an OTLP/HTTP collector, and strawberry's extension making a span per operation and resolver.

What a span carries is held to the logs' rule: no document text (inline literals can be
message content) and no resolver arguments (variables)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import Any

from graphql import GraphQLResolveInfo
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from strawberry.extensions import LifecycleStep, SchemaExtension
from strawberry.extensions.tracing import OpenTelemetryExtension

TRACES_PATH = "/v1/traces"  # OTLP/HTTP: the signal's path under the base endpoint


def traces_url(endpoint: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; the exporter wants the
    traces URL itself (as the SDK derives it from the variable)."""
    return endpoint.rstrip("/") + TRACES_PATH


def tracer_provider(endpoint: str | None, service_name: str) -> TracerProvider | None:
    """None when no collector is configured: no extension, no span, no cost."""
    if not endpoint:
        return None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    # Headers, timeout, compression and TLS files come from the standard OTEL_EXPORTER_OTLP_*
    # variables, read by the exporter itself.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=traces_url(endpoint))))
    return provider


class PrivateOpenTelemetry(OpenTelemetryExtension):
    """strawberry's extension without the document (`query` attribute) and the arguments
    (`graphql.param.*`): both can carry message content and other input."""

    def on_operation(self) -> Generator[None, None, None]:
        context = self.execution_context
        self._operation_name = context.operation_name
        span = self._tracer.start_span(_span_name(self._operation_name), kind=SpanKind.SERVER)
        self._span_holder[LifecycleStep.OPERATION] = span
        span.set_attribute("component", "graphql")
        try:
            yield
        finally:
            name = context.operation_name
            if not self._operation_name and name:
                span.update_name(_span_name(name))  # known once the document is parsed
            # RuntimeError: the document did not resolve to an operation.
            with contextlib.suppress(RuntimeError):
                span.set_attribute("graphql.operation.type", context.operation_type.value)
            if context.result is not None and context.result.errors:
                span.set_attribute("graphql.errors", len(context.result.errors))
            span.end()

    def filter_resolver_args(self, args: dict[str, Any],
                             info: GraphQLResolveInfo[Any]) -> dict[str, Any]:
        return {}


def _span_name(operation_name: str | None) -> str:
    # strawberry's naming, for every operation type (dashboards built on it keep working).
    return f"GraphQL Query: {operation_name}" if operation_name else "GraphQL Query"


def extensions(provider: TracerProvider | None) -> list[Callable[[], SchemaExtension]]:
    """What to add to the schema's extensions (nothing without a collector)."""
    if provider is None:
        return []
    return [lambda: PrivateOpenTelemetry(tracer_provider=provider)]


def shutdown(provider: TracerProvider | None) -> None:
    """Sends the spans still batched, then stops (the lifespan's end)."""
    if provider is not None:
        provider.shutdown()
