"""The one boundary between the service and Temporal, with one table of errors used in both directions (the
way encode/httpx's ``_exceptions.py`` maps transport errors once):

- leaving an activity, an exception becomes the failure it stands for (``activity_failure``, applied to every
  activity by the worker's interceptor): a domain error, a row that is gone or a value that is refused is a
  non-retryable ``ApplicationError`` whose ``type`` names the error class; anything else is retried;
- back at the API, a failed start or Update becomes the same domain error again (``domain_error``), through
  ``start_workflow`` and ``execute_update``, the only two ways the API drives a workflow.

Workflow names, ids and Update names live beside the models that cross the boundary (``services.contracts``).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import structlog
from sqlalchemy.exc import DBAPIError
from temporalio.client import (
    Client,
    Schedule,
    ScheduleAlreadyRunningError,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from services.contracts import SEARCH_ATTRIBUTES
from services.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GiantflowError,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
    refused_value,
    temporal_unreachable,
)

log = structlog.get_logger("giantflow.temporal")

R = TypeVar("R")

# The domain errors that cross the boundary, by the `type` their ApplicationError carries.
DOMAIN_ERRORS: dict[str, type[GiantflowError]] = {
    cls.__name__: cls for cls in (BadRequest, Forbidden, NotFound, Conflict, Unprocessable)
}
# Failure types that are not domain errors, for the record: a refused value (a retried attempt would be
# refused again) and what the bank says (credit activities raise those themselves).
REFUSED_VALUE = "RefusedValue"


def activity_failure(exc: BaseException) -> ApplicationError | None:
    """The non-retryable failure an activity's exception stands for, or None to let the retry policy retry
    it. Domain errors (business rules), ``LookupError`` (a row that is gone) and values PostgreSQL or a model
    refuse are the same on every attempt; an ``ApplicationError`` the activity raised itself says what it
    is already."""
    if isinstance(exc, ApplicationError):
        return None
    if isinstance(exc, GiantflowError):
        return ApplicationError(exc.detail, type=type(exc).__name__, non_retryable=True)
    if isinstance(exc, LookupError):
        return ApplicationError(str(exc) or "not found", type="NotFound", non_retryable=True)
    if isinstance(exc, DBAPIError) and refused_value(exc):
        return ApplicationError(
            "the database refused a value of this activity's input", type=REFUSED_VALUE, non_retryable=True
        )
    if isinstance(exc, ValueError):  # a malformed input, an unbalanced ledger entry (LedgerError)
        return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)
    return None


def application_error(exc: BaseException) -> ApplicationError | None:
    """The ApplicationError at the root of a failure (an Update's, an activity's), if there is one."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return None


def domain_error(exc: BaseException, *, otherwise: GiantflowError) -> GiantflowError:
    """The domain error a workflow failure carries (its ApplicationError's type), or `otherwise`."""
    cause = application_error(exc)
    if cause is not None and cause.type in DOMAIN_ERRORS:
        return DOMAIN_ERRORS[cause.type](cause.message)
    return otherwise


async def start_workflow(
    client: Client,
    workflow: str,
    arg: Any,
    *,
    id: str,
    task_queue: str,
    search_attributes: TypedSearchAttributes,
    unavailable: str,
) -> None:
    """Start a workflow once: starting it again while it runs, or after it closed, changes nothing (the id is
    the business object's). `search_attributes` name its business object for operators (services.contracts);
    `unavailable` is the 503's detail when Temporal cannot be reached."""
    try:
        await client.start_workflow(
            workflow,
            arg,
            id=id,
            task_queue=task_queue,
            search_attributes=search_attributes,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        return  # it ran and closed: it was started
    except (RPCError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not temporal_unreachable(exc):
            raise
        raise ServiceUnavailable(unavailable) from exc


async def execute_update(
    client: Client,
    workflow_id: str,
    name: str,
    arg: Any,
    *,
    result_type: type[R],
    update_id: str | None = None,
    refused: str,
    finished: str,
) -> R:
    """Send an Update and wait for its result. A refusal comes back as the domain error the workflow's
    validator or activity raised (else a 409 saying `refused`); a workflow that has closed is a 409 saying
    `finished`; an unreachable Temporal is a 503 (nothing was changed)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        result: R = await handle.execute_update(name, arg, id=update_id, result_type=result_type)
    except WorkflowUpdateFailedError as exc:
        cause = application_error(exc)
        if cause is None or cause.type not in DOMAIN_ERRORS:
            log.warning("update_failed", workflow_id=workflow_id, name=name, error=str(exc.cause))
        raise domain_error(exc, otherwise=Conflict(refused)) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:  # no worker finished it in time (or died)
        raise ServiceUnavailable(
            "The workflow service did not answer in time; send the request again with the same key."
        ) from exc
    except RPCError as exc:
        finished_or_not = exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION)
        if finished_or_not and not await _still_running(handle):
            raise Conflict(finished) from None
        raise ServiceUnavailable("The workflow service is unavailable; nothing was changed.") from exc
    except RuntimeError as exc:
        if not temporal_unreachable(exc):
            raise
        raise ServiceUnavailable("The workflow service is unavailable; nothing was changed.") from exc
    return result


async def _still_running(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether a workflow an Update was refused for as closed or unknown does run after all (or cannot be
    told): a Temporal server restarting says so for a while (seen in the chaos run's server crashes)."""
    try:
        description = await handle.describe()
    except RPCError as exc:
        return exc.status != RPCStatusCode.NOT_FOUND
    except RuntimeError:  # the lazy client cannot connect
        return True
    return description.status == WorkflowExecutionStatus.RUNNING


async def signal(client: Client, workflow_id: str, name: str, arg: Any = None) -> bool:
    """Send a signal, best effort: True when the workflow took it, or when no running workflow has that
    id (it has ended: nothing is left to tell); False (logged) when Temporal did not take it - try later."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        if arg is None:
            await handle.signal(name)
        else:
            await handle.signal(name, arg)
    except (RPCError, RuntimeError) as exc:
        if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
            return True
        log.warning("signal_failed", workflow_id=workflow_id, name=name, error=str(exc))
        return False
    return True


async def ensure_schedule(
    client: Client, schedule_id: str, schedule: Schedule
) -> Literal["created", "updated"]:
    """Create a Temporal Schedule, or - it exists - replace its definition with ``schedule`` (keeping its
    paused state and notes as the operators left them): create-or-update, so running it again changes
    nothing. Schedules, not cron strings on a workflow: they can be described, paused and backfilled."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(
                schedule=Schedule(
                    action=schedule.action,
                    spec=schedule.spec,
                    policy=schedule.policy,
                    state=current.description.schedule.state,
                )
            )

        await client.get_schedule_handle(schedule_id).update(update)
        return "updated"
    return "created"


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register the search attributes the workflows carry (``services.contracts.SEARCH_ATTRIBUTES``) in
    ``namespace``, through the OperatorService; those already there are left alone, so running it again
    changes nothing. Returns the names it added. An attribute registered with another type is refused
    (``ValueError``): its values could not be set. (Temporal Cloud registers them through its own API.)"""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest

    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    known: dict[str, int] = {}
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = {**listed.system_attributes, **listed.custom_attributes}
    except RPCError as exc:  # the time-skipping test server adds search attributes but cannot list them
        if exc.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
    wrong = sorted(key.name for key in SEARCH_ATTRIBUTES if key.name in known and known[key.name] != keyword)
    if wrong:
        raise ValueError(f"search attributes registered with a type other than Keyword: {', '.join(wrong)}")
    missing = [key.name for key in SEARCH_ATTRIBUTES if key.name not in known]
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace, search_attributes=dict.fromkeys(missing, keyword)
                )
            )
        except RPCError as exc:
            if exc.status is not RPCStatusCode.ALREADY_EXISTS:  # another setup run added them first
                raise
    return missing
