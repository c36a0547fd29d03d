"""The credit domain's one window on program policy: credit-line limits, approval thresholds and deadlines,
the bridge pool, listing rewards, and the working-day calendar of bridge-loan terms. Programs are data
(``programs/*.toml``, loaded once per process as ``Resources.programs``); this is the only module of
``services.credit`` that imports their model, so moving it is a one-line change here.

Working days are Monday to Friday in China Standard Time (UTC+8, the programs' time zone; no daylight
saving). Public holidays and the weekend days worked in their place are not modelled: a term that spans
them falls due a little early or late, never silently beyond the policy's count of weekdays.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from services.contracts import BenefitSchedule
from services.errors import Conflict, NotFound
from services.programs import Program

__all__ = [
    "POLICY_TZ",
    "Program",
    "Programs",
    "add_working_days",
    "approval_deadline",
    "approvals_required",
    "benefit_schedule",
    "due_at",
    "due_on",
    "program",
    "reminder_at",
    "today",
]

POLICY_TZ = timezone(timedelta(hours=8), "CST")

Programs = Mapping[str, Program]


def program(programs: Programs, key: str) -> Program:
    found = programs.get(key)
    if found is None:
        raise Conflict(f"The program {key!r} is not offered.")
    return found


def benefit_schedule(programs: Programs, *, program_key: str, tier: str) -> BenefitSchedule:
    """What a recognition in ``tier`` of the program is granted."""
    policy = programs.get(program_key)
    if policy is None:
        raise NotFound(f"There is no program {program_key!r}.")
    tier_policy = next((found for key, found in policy.tiers.items() if key == tier), None)
    if tier_policy is None:
        raise NotFound(f"Program {program_key!r} has no tier {tier!r}.")
    pool = policy.bridge_pool
    return BenefitSchedule(
        credit_line_limit=tier_policy.credit_line_limit,
        bridge_loan=pool is not None and tier in pool.qualifying_tiers,
        listing_reward=bool(policy.listing_rewards) and tier in policy.listing_qualifying_tiers,
    )


def approvals_required(policy: Program, amount: Decimal) -> int:
    """Maker-checker: above the program's threshold two distinct finance approvers, else one."""
    return 2 if amount > policy.dual_approval_threshold else 1


def approval_deadline(policy: Program, requested_at: datetime) -> datetime:
    return policy.durations.approval_deadline.add_to(requested_at)


def add_working_days(start: date, days: int) -> date:
    """The ``days``-th working day (Monday to Friday) after ``start``; ``start`` itself never counts."""
    if days < 1:
        raise ValueError("a term is at least one working day")
    current = start
    while days:
        current += timedelta(days=1)
        if current.weekday() < 5:
            days -= 1
    return current


def today(at: datetime) -> date:
    """The calendar day of ``at`` in the programs' time zone."""
    return at.astimezone(POLICY_TZ).date()


def due_on(approved_at: datetime, term_days: int) -> date:
    """The day a bridge loan approved at ``approved_at`` must be repaid: ``term_days`` working days later."""
    return add_working_days(today(approved_at), term_days)


def due_at(due: date) -> datetime:
    """The moment a loan due on ``due`` is overdue: the start of the next day, China Standard Time."""
    return datetime.combine(due + timedelta(days=1), time.min, tzinfo=POLICY_TZ)


def reminder_at(due: date, working_days: int) -> datetime:
    """The moment a loan due on ``due`` is reminded of: the start (China Standard Time) of the working day
    ``working_days`` working days before it - the day from which ``add_working_days`` of ``working_days``
    reaches ``due`` (due on a Friday, three working days: Tuesday 00:00)."""
    if working_days < 1:
        raise ValueError("a reminder is at least one working day ahead")
    day = due
    while working_days:
        day -= timedelta(days=1)
        if day.weekday() < 5:
            working_days -= 1
    return datetime.combine(day, time.min, tzinfo=POLICY_TZ)
