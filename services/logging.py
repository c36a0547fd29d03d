"""structlog configured once: JSON lines (or console in a terminal), a request id bound per request.

Every line goes through the same processors and renderer, whoever logs it: the service's structlog loggers
directly, and every library's standard-library logger (uvicorn, temporalio, sqlalchemy, httpx, asyncio)
through a ``ProcessorFormatter`` on the root handler. A line logged while a span is current carries its
``trace_id`` and ``span_id`` (and ``trace_sampled: false`` when its trace is not exported: the id still ties
together one request's lines across the API, the worker and the relay); one logged inside a Temporal
activity or by the SDK's workflow and activity loggers carries ``workflow_id``, ``run_id`` and
``workflow_type`` (and ``activity``, ``attempt``)."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from opentelemetry import trace
from temporalio import activity

_SECRET_KEYS = re.compile(r"(authorization|token|secret|password|jwt)", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _secret(key: str) -> bool:
    """Whether a field of this name is redacted: decided once per name (a line's keys are nearly always
    the same few), not by a regular expression on every key of every line."""
    return _SECRET_KEYS.search(key) is not None


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if _secret(key):
            event[key] = "[redacted]"
    return event


def _trace_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """The current span's ids, as the OpenTelemetry log data model spells them (lower-case hex). A trace the
    sampler left out is exported nowhere but still correlates the lines: it is marked so."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
        if not context.trace_flags.sampled:
            event.setdefault("trace_sampled", False)
    return event


# The SDK's loggers put what they know on the record (``extra``): these keys, under these names here.
_WORKFLOW_FIELDS = {"workflow_id": "workflow_id", "run_id": "run_id", "workflow_type": "workflow_type"}
_ACTIVITY_FIELDS = {
    "workflow_id": "workflow_id",
    "workflow_run_id": "run_id",
    "workflow_type": "workflow_type",
    "activity_type": "activity",
    "attempt": "attempt",
}


def _temporal_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """The workflow (and activity) a line was logged in: from the extras of a record the SDK's workflow or
    activity logger made, else - a line of the service's own, or of a library, inside an activity - from
    the activity's info."""
    record = event.get("_record")
    details: Mapping[str, Any] | None = None
    fields = _ACTIVITY_FIELDS
    if record is not None:
        details = getattr(record, "temporal_activity", None)
        if details is None:
            details, fields = getattr(record, "temporal_workflow", None), _WORKFLOW_FIELDS
    if details is None and activity.in_activity():
        info = activity.info()
        details = {
            "workflow_id": info.workflow_id,
            "workflow_run_id": info.workflow_run_id,
            "workflow_type": info.workflow_type,
            "activity_type": info.activity_type,
            "attempt": info.attempt,
        }
    if isinstance(details, Mapping):
        for key, name in fields.items():
            if key in details:
                event.setdefault(name, details[key])
    return event


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _trace_context,
        _temporal_context,
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: their records go through the same processors (their
    # logger's name as `logger`, the message as `event`) and the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # A line per request (uvicorn's access log; httpx's, which the relay's webhook calls would write once
    # each): the service logs its own events instead.
    for noisy in ("uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cache_loggers() -> None:
    """For a process that has configured logging for good (`giantflow api`, `worker`, `relay`): each logger
    resolves its processors on its first line and keeps them, rather than on every line (structlog's
    ``cache_logger_on_first_use``; measured on this machine, a request's log line took 40 us and 30 with
    it). Tests configure logging again and again, so they leave it off."""
    structlog.configure(cache_logger_on_first_use=True)
