"""Retry policies of the workflows' activity calls. Deterministic and importing only temporalio and the
standard library, so workflow code may use it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio.common import RetryPolicy


def until_done(first: timedelta, longest: timedelta, *, but: Sequence[str]) -> RetryPolicy:
    """Retried for as long as it takes, the interval doubling from ``first`` up to ``longest``; errors of the
    types in ``but`` are final."""
    return RetryPolicy(
        initial_interval=first,
        backoff_coefficient=2.0,
        maximum_interval=longest,
        maximum_attempts=0,
        non_retryable_error_types=but,
    )
