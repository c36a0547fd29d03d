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

from contextvars import ContextVar
from typing import TYPE_CHECKING

from opentelemetry.context import attach, detach
from opentelemetry.propagate import extract
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    set_span_in_context,
    use_span,
)

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
ROUTE_TEMPLATE = "giantflow.route"  # the scope key of a route answered before routing (services/shortcuts.py)

_provider: TracerProvider | None = None
# The trace id a server span's sampling was decided on before the span was made (``ServerSpans``).
_decided_trace_id: ContextVar[int | None] = ContextVar("giantflow_decided_trace_id", default=None)


class DecidedTraceIds(RandomIdGenerator):
    """The SDK's random ids - but a new trace's id is the one ``ServerSpans`` already sampled on, when it
    set one, so that the tracer's own sampling of the span repeats that decision rather than drawing anew."""

    def generate_trace_id(self) -> int:
        decided = _decided_trace_id.get()
        return decided if decided is not None else super().generate_trace_id()


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

    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), id_generator=DecidedTraceIds()
    )
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


def new_trace_bound(sampler: Sampler) -> int | None:
    """How ``sampler`` decides a new trace (no parent), as the bound its trace id's low 64 bits are kept
    under - the SDK's own rule for a trace-id ratio (``TraceIdRatioBased``, alone or as a parent-based
    sampler's root), 0 for always off, above every id for always on - or None for a sampler that has to be
    asked. Every sampler ``OTEL_TRACES_SAMPLER`` can name has a bound."""
    root = sampler._root if isinstance(sampler, ParentBased) else sampler
    if isinstance(root, TraceIdRatioBased):
        return root.bound
    if isinstance(root, StaticSampler):
        return 0 if root._decision is Decision.DROP else TraceIdRatioBased.TRACE_ID_LIMIT + 1
    return None


class ServerSpans:
    """Pure ASGI middleware: a server span around every request (but probes and scrapes), named after the
    route template the router matched (``GET /api/v1/applications/{application_id}``), joining the caller's
    trace when the request carries a ``traceparent`` (W3C Trace Context).

    Rather than OpenTelemetry's ASGI middleware (which ``FastAPIInstrumentor`` installs): measured on this
    machine, that one costs 330 us of CPU per request with its span exported - 120 us even when the request
    is not sampled (it collects some thirty attributes and records its own metrics, and FastAPIInstrumentor
    matches each request against every route again to name it). Here a span carries the method, path, route
    and status only, and a request that starts a trace is sampled before any span exists: one the sampler
    leaves out gets the context an unsampled span would have had - its trace id, for the logs and for every
    process it reaches, flagged not sampled - without the tracer's machinery (20 us against 5 on this
    machine; the cached reads answer in a fraction of a millisecond, docs/performance.md
    ``telemetry_read_overhead_pct``). One it keeps is made by the tracer with the same trace id
    (``DecidedTraceIds``), whose sampling then comes to the same decision. The decision is the sampler's
    on the trace id and the method, as every sampler ``OTEL_TRACES_SAMPLER`` can name decides a new trace;
    a caller's ``traceparent`` takes the tracer's own path (parent-based: the caller decided)."""

    def __init__(self, app: ASGIApp, *, tracer: Tracer, sampler: Sampler, ids: RandomIdGenerator) -> None:
        self.app = app
        self.tracer = tracer
        self.sampler = sampler
        self.ids = ids
        self.unsampled_flags = TraceFlags(TraceFlags.RANDOM_TRACE_ID if ids.is_trace_id_random() else 0)
        self.bound = new_trace_bound(sampler)  # the sampler's decision without a call (about 10 us a request)

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
        decided = None
        if parent is None:  # a new trace: sampled here, before any span exists, on its trace id
            trace_id = self.ids.generate_trace_id()
            if self.bound is not None:
                sampled, trace_state = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self.bound, None
            else:
                sampling = self.sampler.should_sample(None, trace_id, method, SpanKind.SERVER)
                sampled, trace_state = sampling.decision is Decision.RECORD_AND_SAMPLE, sampling.trace_state
            if not sampled:
                context = SpanContext(
                    trace_id,
                    self.ids.generate_span_id(),
                    is_remote=False,
                    trace_flags=self.unsampled_flags,
                    trace_state=trace_state,
                )
                token = attach(set_span_in_context(NonRecordingSpan(context)))
                try:
                    await self.app(scope, receive, send)
                finally:
                    detach(token)
                return
            decided = _decided_trace_id.set(trace_id)
        try:
            attributes = {"http.request.method": method, "url.path": scope["path"]}
            span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        finally:
            if decided is not None:
                _decided_trace_id.reset(decided)
        status = ResponseStatus(send)
        with use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
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
    ids = _provider.id_generator
    assert isinstance(ids, RandomIdGenerator)
    return ServerSpans(app, tracer=_provider.get_tracer("giantflow.api"), sampler=_provider.sampler, ids=ids)


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
    answered = scope.get(ROUTE_TEMPLATE)
    if answered is not None:
        return str(answered)
    state = scope.get("fastapi")
    context = state.get("effective_route_context") if state else None
    # FastAPI (0.130 on) keeps a route's path without its router's prefix; the context it matched in has
    # the whole template.
    template = getattr(context, "path_format", None) or getattr(scope.get("route"), "path_format", None)
    if template:
        return str(template)
    mounted = scope.get("root_path")
    return f"{mounted}/{{path}}" if mounted else UNMATCHED
