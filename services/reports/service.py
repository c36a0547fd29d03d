"""The cohort report of a program and batch, and the program's three-year cultivation plan.

Who reads what (../shared/API.md roles): an admin reads every section of any program; a reviewer reads every
section over the applications filed in its region (its scope, as its queue); finance reads the money -
benefits granted, amounts disbursed and outstanding - and the other sections are null; an enterprise reads
none (403). Only an admin sets a plan.

Recognitions imported from a ministry's published list (no application) count beside those through review,
apart: in the recognition sections and the funnel's last line (``imported``, ``recognized_total``), in the
benefits, and in the plan's ``achieved``. A report for a batch counts the applications of that batch and the
recognitions imported with that batch (a ministry's, e.g. ``2024-6``): its key may be one of the program's
batches or one only imported rows carry.

A plan is policy data: the ``[[plan]]`` of the program's file, until an admin replaces it through the API
(``cultivation_plans``); replacing it with no targets returns to the file's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import CurrentUser, Role
from services.errors import FieldError, Forbidden, NotFound, Unprocessable
from services.pools.service import program_or_404
from services.programs import Program
from services.reports import repository as repo
from services.reports.schemas import (
    BenefitRow,
    FunnelRow,
    IndustryRow,
    MoneyRow,
    PlanLine,
    PlanRead,
    PlanRow,
    PlanUpdate,
    RegionRow,
    Report,
    RuleRow,
    StageTimes,
)
from services.vocabulary import LEVELS, TIERS, region_prefix

__all__ = [
    "Scope",
    "batches",
    "build_report",
    "plan",
    "program_or_404",
    "replace_plan",
    "scope_for",
]

LOANS = ("drawdown", "bridge_loan")
MONEY_KINDS = ("drawdown", "bridge_loan", "listing_reward")
SECTIONS = ("funnel", "screening_rules", "review_times", "by_region", "by_industry", "plan")
"""A report's sections beside the money: null in finance's report."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller's report holds: every section or only the money, over which region's applications."""

    everything: bool
    region: str | None = None

    @property
    def prefix(self) -> str:
        return region_prefix(self.region) if self.region is not None else ""


def scope_for(user: CurrentUser) -> Scope:
    if user.role is Role.admin:
        return Scope(everything=True)
    if user.role is Role.reviewer:
        assert user.region is not None  # a reviewer token always carries one
        return Scope(everything=True, region=user.region)
    if user.role is Role.finance:
        return Scope(everything=False)
    raise Forbidden("Reports are read by administrators, reviewers (their region) and finance (the money).")


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _money(value: Decimal | int | None) -> Decimal:
    return Decimal(value or 0).quantize(Decimal("0.01"))


async def build_report(
    session: AsyncSession,
    *,
    user: CurrentUser,
    programs: Mapping[str, Program],
    key: str,
    batch: str | None,
    now: datetime,
) -> Report:
    """The report of program ``key`` (and ``batch``; None: every batch) as ``user`` may read it."""
    scope = scope_for(user)
    program = program_or_404(programs, key)
    if (
        batch is not None
        and batch not in {b.key for b in program.batches}
        and not await repo.imported_batch(session, program=key, batch=batch)
    ):
        raise NotFound(f"Program {key} has no batch {batch}.")
    cohort = repo.Cohort(program=key, batch=batch, region_prefix=scope.prefix)
    benefits = [_benefit(row) for row in await repo.benefits(session, cohort)]
    money = _money_rows(await repo.money(session, cohort))
    source, targets = await _plan_lines(session, program)
    sections = (
        await _sections(session, program, cohort, targets, now=now)
        if scope.everything
        else dict.fromkeys(SECTIONS)  # money only: the other sections are null
    )
    return Report(
        program=key,
        program_name=program.name,
        batch=batch,
        region=scope.region,
        generated_at=now,
        plan_source=source,
        benefits=benefits,
        money=money,
        **sections,
    )


async def _sections(
    session: AsyncSession,
    program: Program,
    cohort: repo.Cohort,
    targets: Sequence[PlanLine],
    *,
    now: datetime,
) -> dict[str, Any]:
    """The sections of a report beside the money (``SECTIONS``), read by who reads everything."""
    recognitions = await repo.recognitions(session, cohort)
    grouped = {
        name: [row for row in recognitions if row["grouping"] == name]
        for name in ("region", "industry", "tier")
    }
    return {
        "funnel": _funnel(program, await repo.funnel(session, cohort), grouped["tier"]),
        "screening_rules": [
            RuleRow(**row, pass_rate=_ratio(row["passed"], row["checked"]) or 0.0)
            for row in await repo.screening_rules(session, cohort)
        ],
        "review_times": _stage_times(await repo.review_times(session, cohort, now=now)),
        "by_region": [
            RegionRow(province=row["province"], city=row["city"], tier=row["tier"], **_counts(row))
            for row in grouped["region"]
        ],
        "by_industry": [
            IndustryRow(industry=row["industry"], tier=row["tier"], **_counts(row))
            for row in grouped["industry"]
        ],
        "plan": _plan_rows(targets, await repo.achieved_by_year(session, cohort)),
    }


async def batches(
    session: AsyncSession, *, user: CurrentUser, programs: Mapping[str, Program], key: str
) -> tuple[list[str], list[str]]:
    """The batches a report of program ``key`` may be asked for: the program's file's (in its order), then
    those only its imported recognitions carry (a ministry's list's, sorted)."""
    scope_for(user)
    program = program_or_404(programs, key)
    named = [b.key for b in program.batches]
    imported = await repo.imported_batches(session, program=key)
    return named, [batch for batch in imported if batch not in named]


def _counts(row: repo.Row) -> dict[str, int]:
    """A recognition row's counts: through review, imported, both."""
    recognized, imported = int(row["recognized"]), int(row["imported"])
    return {"recognized": recognized, "imported": imported, "recognized_total": recognized + imported}


def _benefit(row: repo.Row) -> BenefitRow:
    granted, imported = int(row["granted"]), int(row["imported_granted"])
    amount, imported_amount = _money(row["amount"]), _money(row["imported_amount"])
    return BenefitRow(
        kind=row["kind"],
        tier=row["tier"],
        status=row["status"],
        granted=granted,
        amount=amount,
        imported_granted=imported,
        imported_amount=imported_amount,
        granted_total=granted + imported,
        amount_total=amount + imported_amount,
    )


def _funnel(program: Program, rows: Sequence[repo.Row], by_tier: Sequence[repo.Row]) -> list[FunnelRow]:
    """The applications' steps per tier, then the tier's imported recognitions (outside the funnel)."""
    found = {str(row["tier"]): row for row in rows}
    imported = {str(row["tier"]): int(row["imported"]) for row in by_tier}
    funnel = []
    for tier in TIERS:  # every tier of the program, lowest first, with or without applications
        policy = program.tiers.get(tier)
        if policy is None and tier not in found and not imported.get(tier):
            continue
        row = found.get(tier, {})
        levels = policy.review_levels if policy is not None else list(LEVELS)

        def count(name: str, row: repo.Row = row) -> int:
            return int(row.get(name, 0))

        funnel.append(
            FunnelRow(
                tier=tier,
                applied=count("applied"),
                screened_in=count("screened_in"),
                passed_municipal=count("passed_municipal") if "municipal" in levels else None,
                passed_provincial=count("passed_provincial") if "provincial" in levels else None,
                passed_national=count("passed_national") if "national" in levels else None,
                on_notice=count("on_notice"),
                recognized=count("recognized"),
                imported=imported.get(tier, 0),
                recognized_total=count("recognized") + imported.get(tier, 0),
            )
        )
    return funnel


def _stage_times(rows: Sequence[repo.Row]) -> list[StageTimes]:
    found = {str(row["stage"]): row for row in rows}
    times = []
    for stage in LEVELS:
        row = found.get(stage)
        if row is None:
            continue
        p50, p90 = row["p50_seconds"], row["p90_seconds"]
        late, overdue = int(row["decided_late"]), int(row["open_overdue"])
        times.append(
            StageTimes(
                stage=stage,
                decided=int(row["decided"]),
                p50_seconds=round(float(p50), 3) if p50 is not None else None,
                p90_seconds=round(float(p90), 3) if p90 is not None else None,
                decided_late=late,
                open=int(row["open"]),
                open_overdue=overdue,
                breaches=late + overdue,
            )
        )
    return times


def _money_rows(rows: Sequence[repo.Row]) -> list[MoneyRow]:
    found = {str(row["kind"]): row for row in rows}
    result = []
    for kind in MONEY_KINDS:
        row = found.get(kind, {})
        disbursed, repaid = _money(row.get("disbursed")), _money(row.get("repaid"))
        result.append(
            MoneyRow(
                kind=kind,
                payouts=int(row.get("payouts", 0)),
                pending=_money(row.get("pending")),
                disbursed=disbursed,
                repaid=repaid,
                outstanding=disbursed - repaid if kind in LOANS else _money(0),
            )
        )
    return result


def _plan_rows(targets: Sequence[PlanLine], achieved: Sequence[repo.Row]) -> list[PlanRow]:
    """Every planned (year, tier), and every year a planned tier achieved something outside the plan; the
    cumulative figures run over a tier's years in order."""
    planned: dict[tuple[int, str], int] = {(line.year, line.tier): line.target for line in targets}
    done: dict[tuple[int, str], tuple[int, int]] = {
        (row["year"], row["tier"]): (int(row["reviewed"]), int(row["imported"])) for row in achieved
    }
    tiers = {tier for _, tier in planned}
    keys = sorted(
        set(planned) | {key for key in done if key[1] in tiers},
        key=lambda key: (TIERS.index(key[1]), key[0]),
    )
    rows: list[PlanRow] = []
    sums: dict[str, tuple[int, int]] = {}
    for year, tier in keys:
        target, (reviewed, imported) = planned.get((year, tier)), done.get((year, tier), (0, 0))
        got = reviewed + imported
        cumulative = sums.get(tier, (0, 0))
        cumulative = (cumulative[0] + (target or 0), cumulative[1] + got)
        sums[tier] = cumulative
        rows.append(
            PlanRow(
                year=year,
                tier=tier,
                planned=target,
                achieved=got,
                cumulative_planned=cumulative[0],
                cumulative_achieved=cumulative[1],
                progress=_ratio(cumulative[1], cumulative[0]),
                achieved_reviewed=reviewed,
                achieved_imported=imported,
            )
        )
    return rows


# --- cultivation plans -------------------------------------------------------------------------------------


async def _plan_lines(session: AsyncSession, program: Program) -> tuple[str, list[PlanLine]]:
    stored = await repo.stored_plan(session, program.key)
    if stored:
        lines = [PlanLine(year=row.year, tier=row.tier, target=row.target) for row in stored]
        return "admin", lines
    lines = [PlanLine(year=line.year, tier=line.tier, target=line.target) for line in program.plan]
    return ("file" if lines else "none"), lines


async def plan(
    session: AsyncSession, *, user: CurrentUser, programs: Mapping[str, Program], key: str
) -> PlanRead:
    scope_for(user)  # who reads a report reads the plan it is measured against
    program = program_or_404(programs, key)
    stored = await repo.stored_plan(session, key)
    source, lines = await _plan_lines(session, program)
    last = max(stored, key=lambda row: row.set_at) if stored else None
    return PlanRead(
        program=key,
        source=source,
        targets=lines,
        set_by=last.set_by if last is not None else None,
        set_at=last.set_at if last is not None else None,
    )


async def replace_plan(
    session: AsyncSession,
    *,
    user: CurrentUser,
    programs: Mapping[str, Program],
    key: str,
    data: PlanUpdate,
) -> PlanRead:
    """Replace program ``key``'s plan (admin): every tier one of the program's, each (year, tier) once."""
    if user.role is not Role.admin:
        raise Forbidden("Only an administrator sets a program's cultivation plan.")
    program = program_or_404(programs, key)
    errors, seen = [], set()
    for index, line in enumerate(data.targets):
        if line.tier not in program.tiers:
            errors.append(FieldError(field=f"targets[{index}].tier", message=f"not a tier of {key}"))
        if (line.year, line.tier) in seen:
            errors.append(
                FieldError(field=f"targets[{index}]", message="this year and tier are planned twice")
            )
        seen.add((line.year, line.tier))
    if errors:
        raise Unprocessable("The plan has lines this program cannot take.", errors=errors)
    await repo.replace_plan(
        session, key, lines=[(line.year, line.tier, line.target) for line in data.targets], set_by=user.sub
    )
    return await plan(session, user=user, programs=programs, key=key)
