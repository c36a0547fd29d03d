"""Traces (OpenTelemetry): one tracer provider per process, exported by OTLP/HTTP to GIANTFLOW_OTLP_ENDPOINT.

One request is one trace through every process it reaches: the API's server span (ASGI), the Temporal
client's start or Update (the tracing interceptor on the client carries the context in the workflow's
headers), the workflow and its activities in the worker (the same interceptor, on the worker's client), and
under them every SQL statement (SQLAlchemy's engine) and outbound call (httpx: the bank, the webhooks).
Sampling is the SDK's standard environment's say (``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``;
parent-based, always on, by default), and so are the exporter's and batch processor's limits.

Set up once per process (``setup_tracing``); with tracing off every function here does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, StatusCode

from services.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
    from temporalio.client import Interceptor

API, WORKER, RELAY = "giantflow-api", "giantflow-worker", "giantflow-relay"
# Probes and scrapes are no one's request: no span.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED = "unmatched"  # the route of a path no route matched (a 404)

_provider: TracerProvider | None = None


def setup_tracing(settings: Settings, service: str) -> TracerProvider | None:
    """The process's tracer provider, made on the first call (later calls return it, whatever their
    ``service``): spans batched to the OTLP endpoint, if one is set, and httpx instrumented. None when
    tracing is off."""
    global _provider
    if not settings.tracing_enabled:
        return None
    if _provider is not None:
        return _provider
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    # Handed to every instrumentation rather than made the global provider, which can be set only once in
    # a process: the tests set up and shut down several.
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Export what is still batched and stop (the end of the process)."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        HTTPXClientInstrumentor().uninstrument()
        if SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
            SQLAlchemyInstrumentor().uninstrument()
        provider.shutdown()


def instrument_engine(engine: AsyncEngine) -> None:
    """A span per SQL statement the engine runs - the process's one engine: the instrumentor takes the first
    it is given (the asyncpg pools of the views' cache and the rate limits are not traced)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # Its declared range stops below SQLAlchemy 2.1, whose engine events it listens to are unchanged.
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=_provider, skip_dep_check=True
    )


def client_interceptors() -> list[Interceptor]:
    """The Temporal client's interceptors: with tracing set up, the SDK's, which puts the caller's span into
    a workflow's headers and, on a worker's client, makes the workflow's and activities' spans under it."""
    if _provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(_provider.get_tracer("temporalio"))]


class ServerSpans:
    """Pure ASGI middleware: a server span around every request (but probes and scrapes), named after the
    route template the router matched (``GET /api/v1/applications/{application_id}``), joining the caller's
    trace when the request carries a ``traceparent`` (W3C Trace Context).

    Rather than OpenTelemetry's ASGI middleware (which ``FastAPIInstrumentor`` installs): measured on this
    machine, that one costs 330 us of CPU per request with its span exported - 120 us even when the request
    is not sampled (it collects some thirty attributes and records its own metrics, and FastAPIInstrumentor
    matches each request against every route again to name it) - against 110 us here, where a span carries
    the method, path, route and status only (docs/performance.md, ``telemetry_read_overhead_pct``)."""

    def __init__(self, app: ASGIApp, *, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        parent = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                parent = extract({"traceparent": value.decode("latin-1")})
                break
        method: str = scope["method"]
        status = ResponseStatus(send)
        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            try:
                await self.app(scope, receive, status)
            finally:
                if span.is_recording():
                    route = route_template(scope)
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status.code)
                    if status.code >= 500:
                        span.set_status(StatusCode.ERROR)


def traced(app: ASGIApp) -> ASGIApp:
    """The API with a server span around every request (the process's tracer provider)."""
    assert _provider is not None, "tracing is not set up"
    return ServerSpans(app, tracer=_provider.get_tracer("giantflow.api"))


class ResponseStatus:
    """The ``send`` a middleware hands the app: passes every message on and keeps the status the app
    answered with (500 until a response starts)."""

    __slots__ = ("code", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.code = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.code = message["status"]
        await self.send(message)


def route_template(scope: Scope) -> str:
    """The template of the route that answered (``/api/v1/applications/{application_id}``), a mount's
    (``/console/static/{path}``), or ``unmatched``: never the raw path, which anyone can vary."""
    state = scope.get("fastapi")
    context = state.get("effective_route_context") if state else None
    # FastAPI (0.130 on) keeps a route's path without its router's prefix; the context it matched in has
    # the whole template.
    template = getattr(context, "path_format", None) or getattr(scope.get("route"), "path_format", None)
    if template:
        return str(template)
    mounted = scope.get("root_path")
    return f"{mounted}/{{path}}" if mounted else UNMATCHED
