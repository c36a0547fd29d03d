"""The credit domain's one window on program policy: credit-line limits, approval thresholds and deadlines,
the bridge pool, listing rewards, and the working-day calendar of bridge-loan terms. Programs are data
(``programs/*.toml``, loaded once per process as ``Resources.programs``); this is the only module of
``services.credit`` that imports their model, so moving it is a one-line change here.

Working days follow China's official calendar in China Standard Time (UTC+8, the programs' time zone; no
daylight saving): Monday to Friday but the public holidays, plus the weekend days worked in their place, as
the maintained ``chinesecalendar`` package publishes them (``is_working_day``, the one place that decides).
A year beyond the package's data is read from ``programs/calendar/china.toml`` (the State Council's notice,
entered when it is published); a year in neither is counted provisionally - weekends and the fixed-date
statutory holidays (1 January, 1-2 May, 1-3 October) off - and logged, never as weekdays alone. Refusing
instead would close the bridge fund every December, when terms first reach a year not yet published.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path

import chinese_calendar  # type: ignore[import-untyped]
import structlog

from services.contracts import BenefitSchedule
from services.errors import Conflict, NotFound
from services.programs import IsoDuration, Program

log = structlog.get_logger(__name__)

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
    "is_working_day",
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


def drawdown_term(policy: Program) -> str:
    """The term of a drawdown requested now under ``policy`` (kept on the drawdown: a later change of the
    program's file does not move the due time of drawdowns already requested)."""
    return str(policy.durations.drawdown_term)


def drawdown_due_at(term: str, paid_at: datetime) -> datetime:
    """When a drawdown of ``term`` (ISO 8601, calendar months and years) paid out at ``paid_at`` falls due."""
    due: datetime = IsoDuration.parse(term).add_to(paid_at)
    return due


def approval_deadline(policy: Program, requested_at: datetime) -> datetime:
    return policy.durations.approval_deadline.add_to(requested_at)


# Fixed-date statutory holidays (全国年节及纪念日放假办法, as revised with effect from 2025): the days a year
# not yet published is known to have off, whatever its notice will add.
STATUTORY_FIXED = ((1, 1), (5, 1), (5, 2), (10, 1), (10, 2), (10, 3))


class CalendarFileError(ValueError):
    """``programs/calendar/china.toml`` is malformed: a start-up error of the process that reads it."""


@dataclass(frozen=True)
class PublishedYears:
    """The years entered in the calendar file: their days off and their worked weekend days."""

    holidays: frozenset[date]
    workdays: frozenset[date]
    years: frozenset[int]

    @classmethod
    def read(cls, path: Path) -> PublishedYears:
        if not path.is_file():
            return cls(frozenset(), frozenset(), frozenset())
        try:
            years = tomllib.loads(path.read_text(encoding="utf-8")).get("years", {})
            holidays: set[date] = set()
            workdays: set[date] = set()
            for year, days in years.items():
                for name, into in (("holidays", holidays), ("workdays", workdays)):
                    for text in days.get(name, []):
                        day = date.fromisoformat(text)
                        if day.year != int(year):
                            raise ValueError(f"years.{year}.{name}: {text} is not in {year}")
                        into.add(day)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise CalendarFileError(f"{path}: {exc}") from exc
        return cls(frozenset(holidays), frozenset(workdays), frozenset(int(year) for year in years))


_provisional_logged: set[int] = set()


@cache
def published_years() -> PublishedYears:
    """The calendar file in the programs folder (``GIANTFLOW_PROGRAMS_DIR``), read once per process."""
    from services.config import get_settings

    return PublishedYears.read(get_settings().programs_dir / "calendar" / "china.toml")


def is_working_day(day: date, published: PublishedYears | None = None) -> bool:
    """Whether ``day`` is a working day in China: a weekday that is not a public holiday, or a weekend day
    worked in place of one - from ``chinesecalendar``'s data, else the calendar file's year, else
    provisionally (weekends and the fixed-date statutory holidays off). The one function that decides, for
    every term and reminder."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        pass
    entered = published if published is not None else published_years()
    if day.year in entered.years:
        return day in entered.workdays or (day.weekday() < 5 and day not in entered.holidays)
    if day.year not in _provisional_logged:
        _provisional_logged.add(day.year)
        log.warning("working_days_provisional", year=day.year, calendar_years=calendar_years())
    return day.weekday() < 5 and (day.month, day.day) not in STATUTORY_FIXED


def calendar_years() -> str:
    """The years ``chinesecalendar`` covers, e.g. ``2004-2026``."""
    years = [day.year for day in chinese_calendar.holidays]
    return f"{min(years)}-{max(years)}"


def _shift_working_days(start: date, days: int) -> date:
    """The ``days``-th working day after ``start`` (before it, for a negative ``days``); ``start`` itself
    never counts."""
    step = timedelta(days=1 if days > 0 else -1)
    left, current = abs(days), start
    while left:
        current += step
        if is_working_day(current):
            left -= 1
    return current


def add_working_days(start: date, days: int) -> date:
    """The ``days``-th working day (``is_working_day``) after ``start``; ``start`` itself never counts."""
    if days < 1:
        raise ValueError("a term is at least one working day")
    return _shift_working_days(start, days)


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
    day = _shift_working_days(due, -working_days)
    return datetime.combine(day, time.min, tzinfo=POLICY_TZ)
