"""OpenTelemetry tracing, configured by `FLOTILLA_TRACING` ("" off, "console", or an
OTLP/HTTP endpoint). Off installs nothing, so it costs nothing."""

from __future__ import annotations

import functools
import sys

from temporalio.client import Interceptor

from fleet.config import Settings


@functools.cache
def client_interceptors() -> list[Interceptor]:
    """Interceptors for a client; workers built from that client inherit them."""
    target = Settings.from_env().tracing
    if not target:
        return []
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )
    from temporalio.contrib.opentelemetry import TracingInterceptor

    exporter: SpanExporter
    if target == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)  # keep -o json output clean
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=target)
    provider = TracerProvider(resource=Resource.create({"service.name": "flotilla"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return [TracingInterceptor(always_create_workflow_spans=True)]
