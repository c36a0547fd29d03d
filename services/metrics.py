"""Metrics in Prometheus' text format: the API's requests, and where ``/metrics`` is served.

GIANTFLOW_METRICS_PORT set: `giantflow api` and `giantflow worker` each serve ``/metrics`` on
GIANTFLOW_METRICS_HOST:GIANTFLOW_METRICS_PORT (prometheus_client's server, in a thread of its own) and the
API's port serves none. Unset: the API answers ``/metrics`` on its own port in development and test only.

The worker's ``/metrics`` holds the Temporal SDK's metrics too: the SDK's Prometheus exporter listens on a
loopback port of its own (a free one, chosen at start), and a scrape of the worker's port reads it and adds
its families to the process's (``SdkMetrics``), so Prometheus scrapes one port per process.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from services.config import Environment, Settings
from services.telemetry import route_template

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from starlette.types import Scope, Send
    from temporalio.runtime import Runtime

REQUESTS = Counter(
    "giantflow_http_requests",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "giantflow_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Every answer the API gives, counted and timed by method, route template and status: called once per
    request by the request-context middleware (services/app.py), at the end of the request, rather than
    by an ASGI layer of its own (one more frame and ``send`` wrapper on every request). A request costs it a
    dictionary look-up and two increments."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = route_template(scope)
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


async def exposition(send: Send) -> None:
    """``GET /metrics`` answered: the process's registry in Prometheus' text format."""
    body = generate_latest(REGISTRY)
    headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serves_on_api_port(settings: Settings) -> bool:
    """Whether the API's own port answers ``/metrics``: only without a metrics port, outside production."""
    return settings.metrics_port is None and settings.environment is not Environment.production


@dataclass
class MetricsServer:
    """``/metrics`` on a listener of its own (prometheus_client's WSGI server, in a daemon thread)."""

    server: WSGIServer
    address: str

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(settings: Settings) -> MetricsServer | None:
    """The process's ``/metrics`` listener on metrics_host:metrics_port, or None when no port is set."""
    if settings.metrics_port is None:
        return None
    from prometheus_client import start_http_server

    server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    return MetricsServer(server, f"{settings.metrics_host}:{server.server_address[1]}")


# --- the Temporal SDK's own metrics (the worker) -----------------------------------------------------------


class SdkMetrics(Collector):
    """The Temporal SDK's metrics, read from its exporter on a loopback port at every scrape."""

    def __init__(self, url: str) -> None:
        self.url = url

    def describe(self) -> list[Metric]:
        """Nothing known in advance (the registry would otherwise scrape the SDK to learn the names)."""
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return  # a worker still starting: its own figures only, this once
        yield from text_string_to_metric_families(text)


def temporal_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime whose metrics go to a Prometheus exporter on a free loopback port, read into this
    process's ``/metrics`` (``SdkMetrics``); None when no metrics port is set (the SDK's default runtime).
    Durations in seconds and counters named ``_total``, as Prometheus names them."""
    if settings.metrics_port is None:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"127.0.0.1:{port}",
                counters_total_suffix=True,
                durations_as_seconds=True,
            )
        )
    )
    REGISTRY.register(SdkMetrics(f"http://127.0.0.1:{port}/metrics"))
    return runtime
