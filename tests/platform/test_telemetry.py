"""Observability on real parts: Prometheus metrics (the API's requests by route template, the worker's domain
gauges, the Temporal SDK's own metrics on the same port), one trace from an API request through Temporal to
the activity's SQL, and every library's log line as JSON with the trace and the workflow it belongs to."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
from opentelemetry.trace import SpanContext, SpanKind, get_current_span
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devtools.devstack import free_port
from services import telemetry
from services.app import create_app
from services.config import Environment, Settings
from services.db import create_engine, create_sessionmaker
from services.logging import configure_logging
from services.metrics import temporal_runtime
from services.resources import Resources, connect_temporal
from tests.applications.conftest import Applicant
from tests.conftest import bearer, make_token, rollback_resources
from tests.support.factories import random_uscc, seed_application
from workflows import gauges
from workflows.worker import build_worker


@pytest.fixture
def bare_api(connection: AsyncConnection) -> Callable[[Settings], FastAPI]:
    """A factory of the API (any settings) on the test's rolled-back transaction, Temporal unreachable."""

    def make(s: Settings) -> FastAPI:
        return create_app(s, resources_factory=rollback_resources(connection))

    return make


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- metrics ------------------------------------------------------------------------------------------------


async def test_api_counts_requests_by_route_template_and_serves_metrics_in_test(
    bare_api: Callable[[Settings], FastAPI], settings: Settings
) -> None:
    app = bare_api(settings)
    route = "/api/v1/applications/{application_id}"
    before = _sample("giantflow_http_requests_total", method="GET", route=route, status="404")
    refused = _sample("giantflow_http_requests_total", method="POST", route="unmatched", status="413")
    missing = str(uuid.uuid4())
    admin = bearer(make_token(settings, "admin", "admin-metrics"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            assert (await api.get(f"/api/v1/applications/{missing}", headers=admin)).status_code == 404
            assert (await api.get(f"/no/such/{missing}")).status_code == 404
            # Refused before any route is matched (the body limit): counted all the same.
            too_large = await api.post("/no/such", content=b"x", headers={"content-length": "999999999"})
            assert too_large.status_code == 413
            scraped = await api.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert _sample("giantflow_http_requests_total", method="GET", route=route, status="404") == before + 1
    counted = _sample("giantflow_http_requests_total", method="POST", route="unmatched", status="413")
    assert counted == refused + 1
    assert 'giantflow_http_request_duration_seconds_bucket{le="0.005",method="GET",route=' in text
    assert 'route="unmatched"' in text
    assert missing not in text  # never a raw path: the label set stays bounded


async def test_metrics_port_serves_metrics_apart_and_production_hides_them(
    bare_api: Callable[[Settings], FastAPI], settings: Settings
) -> None:
    port = free_port()
    apart = bare_api(settings.model_copy(update={"metrics_port": port}))
    async with apart.router.lifespan_context(apart):
        transport = httpx.ASGITransport(app=apart)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            assert (await api.get("/healthz")).status_code == 200
            assert (await api.get("/metrics")).status_code == 404  # not on the API's port
        async with httpx.AsyncClient() as scraper:
            scraped = await scraper.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200
        assert 'giantflow_http_requests_total{method="GET",route="/healthz",status="200"}' in scraped.text
    with pytest.raises(httpx.ConnectError):  # closed with the API
        async with httpx.AsyncClient() as scraper:
            await scraper.get(f"http://127.0.0.1:{port}/metrics")

    production = bare_api(settings.model_copy(update={"environment": Environment.production}))
    async with production.router.lifespan_context(production):
        transport = httpx.ASGITransport(app=production)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            assert (await api.get("/metrics")).status_code == 404


async def test_worker_gauges_read_the_domain(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    await gauges.refresh(sessionmaker)
    before = _sample("giantflow_applications", status="screening")
    async with sessionmaker.begin() as session:  # committed, as the worker would see it
        await seed_application(session, uscc=random_uscc("500103"))
    await gauges.refresh(sessionmaker)
    assert _sample("giantflow_applications", status="screening") == before + 1
    for state in ("pending", "retrying", "dead"):
        assert REGISTRY.get_sample_value("giantflow_webhook_deliveries", {"state": state}) is not None
    for kind in ("drawdown", "bridge_loan", "listing_reward"):
        assert REGISTRY.get_sample_value("giantflow_payouts_awaiting_approval", {"kind": kind}) is not None
        assert REGISTRY.get_sample_value("giantflow_disbursed_yuan", {"kind": kind}) is not None
    for name in ("review_tasks_overdue", "ledger_entries", "outbox_lag_seconds"):
        assert REGISTRY.get_sample_value(f"giantflow_{name}") is not None
    assert _sample("giantflow_gauges_refreshed_timestamp_seconds") > 0


@activity.defn(name="pay")
async def _flaky_payment() -> str:
    if activity.info().attempt < 2:
        raise RuntimeError("the bank timed out")
    logging.getLogger("temporalio.activity").warning("paid on a retry")
    return "paid"


@workflow.defn(name="DisbursementWorkflow")
class _Payment:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            _flaky_payment,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
        )


async def test_worker_serves_the_sdk_metrics_and_counts_payment_retries(
    dev_server: Any, settings: Settings
) -> None:
    runtime = temporal_runtime(settings.model_copy(update={"metrics_port": free_port()}))
    assert runtime is not None
    client = await Client.connect(
        dev_server.client.service_client.config.target_host, runtime=runtime, namespace="default"
    )
    queue = f"test-{uuid.uuid4().hex[:10]}"
    retries = _sample("giantflow_payment_retries_total", activity="pay")
    async with Worker(
        client,
        task_queue=queue,
        workflows=[_Payment],
        activities=[_flaky_payment],
        interceptors=[gauges.PaymentRetries()],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        assert await client.execute_workflow(_Payment.run, id=f"pay-{queue}", task_queue=queue) == "paid"
    assert _sample("giantflow_payment_retries_total", activity="pay") == retries + 1
    assert _sample("giantflow_payments_retrying") == 0
    text = generate_latest(REGISTRY).decode()
    assert "temporal_workflow_completed_total{" in text
    assert "temporal_activity_execution_latency_bucket{" in text


# --- traces and logs ----------------------------------------------------------------------------------------


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    """Tracing set up for this test, every span kept in memory (OpenTelemetry's own exporter)."""
    telemetry.shutdown_tracing()
    provider = telemetry.setup_tracing(settings.model_copy(update={"tracing": True}), telemetry.API)
    assert provider is not None
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        telemetry.shutdown_tracing()


async def test_one_trace_from_the_api_through_temporal_to_the_activity_sql(
    spans: InMemorySpanExporter, settings: Settings, migrated: str, dev_server: Any
) -> None:
    queue = f"test-{uuid.uuid4().hex[:10]}"
    traced = settings.model_copy(
        update={
            "tracing": True,
            "temporal_task_queue": queue,
            "temporal_address": dev_server.client.service_client.config.target_host,
        }
    )
    engine = create_engine(migrated)  # instrumented by the app's start
    client = await connect_temporal(traced, lazy=False)  # with the tracing interceptor
    resources = Resources(
        settings=traced,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        temporal=client,
        http=httpx.AsyncClient(),
        owns=True,
    )

    async def factory(_: Settings) -> Resources:
        return resources

    app = create_app(traced, resources_factory=factory)
    try:
        async with build_worker(client, resources, task_queue=queue), app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
                applicant = Applicant(api=api, settings=traced, uscc=random_uscc("500103"))
                assert (await applicant.register()).status_code == 201
                spans.clear()
                submitted = await applicant.submit()
                assert submitted.status_code == 201, submitted.text
                finished = spans.get_finished_spans()
                request = next((s for s in finished if s.name == "POST /api/v1/applications"), None)
                assert request is not None, [s.name for s in finished]
                trace_id = request.context.trace_id

                def of_trace() -> list[Any]:
                    return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]

                for _ in range(200):  # the workflow's first step, screening, is a local activity
                    if any(s.name.startswith("RunActivity:") for s in of_trace()):
                        break
                    await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    names = [s.name for s in of_trace()]
    assert "StartWorkflow:ReviewWorkflow" in names, names
    assert "RunWorkflow:ReviewWorkflow" in names, names
    run = next(s for s in of_trace() if s.name.startswith("RunActivity:"))
    assert run.resource.attributes["service.name"] == telemetry.API  # one provider in this process
    sql = [s for s in of_trace() if s.attributes.get("db.system") == "postgresql"]
    assert any(s.parent is not None and s.parent.span_id == run.context.span_id for s in sql), names
    assert any(s.parent is not None and s.parent.span_id == request.context.span_id for s in sql), names


class _Recording(Sampler):
    """The provider's sampler, with every trace id it was asked about noted."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.asked: list[int] = []

    def should_sample(self, parent_context: Any, trace_id: int, *args: Any, **kwargs: Any) -> SamplingResult:
        self.asked.append(trace_id)
        return self.inner.should_sample(parent_context, trace_id, *args, **kwargs)

    def get_description(self) -> str:
        return self.inner.get_description()


async def test_a_new_trace_is_sampled_once_and_one_left_out_keeps_its_trace_id(
    bare_api: Callable[[Settings], FastAPI], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API samples a request that starts a trace before any span exists: one kept is the tracer's span
    on the very trace id that was sampled (not a second draw), one left out still runs under that trace id,
    flagged not sampled, and exports nothing; a caller's traceparent decides for its request."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    telemetry.shutdown_tracing()
    traced = settings.model_copy(update={"tracing": True})
    provider = telemetry.setup_tracing(traced, telemetry.API)
    assert provider is not None
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sampler = _Recording(provider.sampler)
    provider.sampler = sampler  # read by the API's middleware and tracer when the app is made
    seen: list[SpanContext] = []
    try:
        app = bare_api(traced)

        @app.get("/probe")
        async def probe() -> dict[str, str]:
            seen.append(get_current_span().get_span_context())
            return {}

        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
                for _ in range(40):
                    assert (await api.get("/probe")).status_code == 200
                caller = "4bf92f3577b34da6a3ce929d0e0e4736"
                for flags in ("01", "00"):
                    header = {"traceparent": f"00-{caller}-00f067aa0ba902b7-{flags}"}
                    assert (await api.get("/probe", headers=header)).status_code == 200
    finally:
        telemetry.shutdown_tracing()
    *new, joined, declined = seen
    kept = [c for c in new if c.trace_flags.sampled]
    assert 0 < len(kept) < len(new)  # 2 * 0.5**40 that this fails by chance
    # Each new trace was decided on once, on its own id; the tracer's own check of a kept one asked again
    # about the same id (a second draw would have asked about an id no request ran under).
    assert len({c.trace_id for c in new}) == len(new)
    assert set(sampler.asked) == {c.trace_id for c in new} | {joined.trace_id}
    bound = round(0.5 * 2**64)
    assert all(c.trace_flags.sampled == ((c.trace_id & (2**64 - 1)) < bound) for c in new)
    assert all(c.is_valid and not c.is_remote for c in new)
    exported = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert sorted(s.context.trace_id for s in exported) == sorted(
        [c.trace_id for c in kept] + [int(caller, 16)]
    )
    assert {s.name for s in exported} == {"GET /probe"}
    assert joined.trace_id == declined.trace_id == int(caller, 16)
    assert joined.trace_flags.sampled
    assert not declined.trace_flags.sampled


@pytest.mark.parametrize(
    ("name", "arg"),
    [
        ("always_on", None),
        ("always_off", None),
        ("traceidratio", "0.1"),
        ("parentbased_always_on", None),
        ("parentbased_always_off", None),
        ("parentbased_traceidratio", "0.1"),
        ("parentbased_traceidratio", "0.5"),
    ],
)
def test_a_new_trace_is_decided_without_asking_the_sampler_as_it_would_decide(
    name: str, arg: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ServerSpans`` decides a new trace by the bound ``new_trace_bound`` reads off the sampler the SDK
    makes from ``OTEL_TRACES_SAMPLER``: for every such sampler, and for ids on either side of the bound, the
    same decision as the sampler's own; a sampler of another kind has no bound and is asked."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    sampler = TracerProvider().sampler
    bound = telemetry.new_trace_bound(sampler)
    assert bound is not None
    low = TraceIdRatioBased.TRACE_ID_LIMIT
    rng = random.Random(2026)
    ids = [rng.getrandbits(128) or 1 for _ in range(2000)]
    ids += [(7 << 64) | edge for edge in (max(bound - 1, 0), min(bound, low), 1, low)]
    decided = [(trace_id & low) < bound for trace_id in ids]
    asked = [
        sampler.should_sample(None, trace_id, "GET", SpanKind.SERVER).decision is Decision.RECORD_AND_SAMPLE
        for trace_id in ids
    ]
    assert decided == asked
    assert telemetry.new_trace_bound(_Recording(sampler)) is None


@pytest.fixture
def rendered() -> Iterator[io.StringIO]:
    """The service's logging as `giantflow api` sets it up, the root handler writing into a buffer."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    # configure_logging quiets these (uvicorn.access, httpx): their levels go back as they were.
    quieted = {name: logging.getLogger(name).level for name in ("uvicorn.access", "httpx")}
    configure_logging("INFO", json=True)
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer))  # the service's own lines
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        for name, level in quieted.items():
            logging.getLogger(name).setLevel(level)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.configure(**saved_structlog)


def test_library_lines_are_json_with_the_trace_and_the_workflow(
    spans: InMemorySpanExporter, rendered: io.StringIO
) -> None:
    provider = telemetry.setup_tracing(Settings(tracing=True), telemetry.API)
    assert provider is not None
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        # uvicorn's lines that reach the log are uvicorn.error's: its access log is off (`giantflow api` runs
        # uvicorn with access_log=False, which unhooks uvicorn.access from the root handler - as any uvicorn
        # started in this process, e.g. the tests' loopback servers, leaves it).
        uvicorn_error = logging.getLogger("uvicorn.error")
        uvicorn_error.error("ASGI callable should return None, but returned '%s'.", 1)
        workflow_details = {"workflow_id": "review-1", "run_id": "run-1", "workflow_type": "ReviewWorkflow"}
        logging.getLogger("temporalio.workflow").warning(
            "stage overdue", extra={"temporal_workflow": workflow_details}
        )
        activity_details = {
            "activity_type": "screen",
            "attempt": 2,
            "workflow_id": "review-2",
            "workflow_run_id": "run-2",
            "workflow_type": "ReviewWorkflow",
        }
        logging.getLogger("temporalio.activity").warning(
            "retrying", extra={"temporal_activity": activity_details}
        )
    lines = [json.loads(line) for line in rendered.getvalue().splitlines()]
    trace_id = format(span.get_span_context().trace_id, "032x")
    uvicorn_line, workflow_line, activity_line = lines
    assert uvicorn_line["logger"] == "uvicorn.error"
    assert uvicorn_line["event"] == "ASGI callable should return None, but returned '1'."
    assert uvicorn_line["level"] == "error"
    assert {line["trace_id"] for line in lines} == {trace_id}
    assert uvicorn_line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert workflow_line["logger"] == "temporalio.workflow"
    assert (workflow_line["workflow_id"], workflow_line["run_id"]) == ("review-1", "run-1")
    assert activity_line["activity"] == "screen"
    assert (activity_line["workflow_id"], activity_line["run_id"], activity_line["attempt"]) == (
        "review-2",
        "run-2",
        2,
    )


async def test_activity_lines_carry_the_workflow(dev_server: Any, rendered: io.StringIO) -> None:
    """A line the service itself logs inside an activity (structlog) carries the workflow it runs for."""
    queue = f"test-{uuid.uuid4().hex[:10]}"
    client: Client = dev_server.client
    async with Worker(
        client,
        task_queue=queue,
        workflows=[_Noted],
        activities=[_noted],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        await client.execute_workflow(_Noted.run, id=f"noted-{queue}", task_queue=queue)
    line = next(json.loads(x) for x in rendered.getvalue().splitlines() if '"inside"' in x)
    assert (line["workflow_id"], line["activity"], line["attempt"]) == (f"noted-{queue}", "noted", 1)
    assert line["workflow_type"] == "Noted"


@activity.defn(name="noted")
async def _noted() -> None:
    structlog.get_logger("giantflow.test").warning("inside")


@workflow.defn(name="Noted")
class _Noted:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(_noted, start_to_close_timeout=timedelta(seconds=10))
