"""The report's queries: read-only SQL over both domains' tables, one set-based statement per section.

Every section starts from a program's applications (``ix_applications_program_batch_tier``: the program, a
batch), optionally only those filed in a region (a reviewer's scope, a prefix of the 6-digit code), and
reaches the rest through indexed keys: review tasks and transitions by application, recognitions by their
application, benefits, credit lines, bridge loans and listing rewards by recognition, drawdowns by line,
disbursements by payout. Aggregates - counts, sums, ``percentile_cont`` - are computed by PostgreSQL; nothing
here loops over rows in Python. Drafts were never filed and count nowhere.

Recognitions imported from a ministry's published list (``source = 'import'``) have no application: the
recognition sections, the benefits and the plan add them from ``recognitions`` itself
(``Cohort.imported_from``), a second branch of the same statement, counted apart (``imported``); the funnel
and the rest stay the applications'. They are reached by ``application_id IS NULL`` - what the
``source_known`` check makes of an import - through the unique index on ``application_id`` (a btree holds
the NULLs too): only imported rows are read (the planner scans the table only where they are most of it).

This module sits above services.applications and services.credit (pyproject's layers): it reads their
tables, never their code, and neither domain imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.reports.models import CultivationPlan


@dataclass(frozen=True, slots=True)
class Cohort:
    """Which applications a report counts: a program's, of one batch or all, filed in a region or anywhere
    (``region_prefix``: '' the whole country, '50' a province, '5001' a city, 6 digits a district)."""

    program: str
    batch: str | None = None
    region_prefix: str = ""

    def where(self, alias: str = "a", *, by_batch: bool = True) -> str:
        """The SQL condition on ``applications`` (as ``alias``); its values are bound (``params``)."""
        parts = [f"{alias}.program = :program", f"{alias}.status <> 'draft'"]
        if by_batch and self.batch is not None:
            parts.append(f"{alias}.batch = :batch")
        if self.region_prefix:
            parts.append(f"{alias}.region_code LIKE :region_like")
        return " AND ".join(parts)

    def imported_from(self, *, by_batch: bool = True, enterprises: bool = False) -> str:
        """``FROM ... WHERE ...`` of the program's imported recognitions (as ``r``): named in the cohort's
        batch (the batch an imported row carries is the ministry's: a report for batch X counts the rows
        imported with batch X), of enterprises registered in the region (as ``e``, joined also when
        ``enterprises``)."""
        parts = ["r.application_id IS NULL", "r.source = 'import'", "r.program = :program"]
        if by_batch and self.batch is not None:
            parts.append("r.batch = :batch")
        if self.region_prefix:
            parts.append("e.region_code LIKE :region_like")
        join = " JOIN enterprises e ON e.uscc = r.uscc" if enterprises or self.region_prefix else ""
        return f"FROM recognitions r{join} WHERE {' AND '.join(parts)}"

    def params(self, **more: Any) -> dict[str, Any]:
        values: dict[str, Any] = {"program": self.program, **more}
        if self.batch is not None:
            values["batch"] = self.batch
        if self.region_prefix:
            values["region_like"] = self.region_prefix + "%"
        return values


Row = dict[str, Any]


async def _rows(session: AsyncSession, sql: str, params: dict[str, Any]) -> list[Row]:
    result = await session.execute(text(sql), params)
    return [dict(row) for row in result.mappings()]


async def funnel(session: AsyncSession, cohort: Cohort) -> list[Row]:
    """Per tier: filed, screened in, approved at each review level, put on public notice, recognised."""
    sql = f"""
        SELECT a.tier,
               count(*) AS applied,
               count(*) FILTER (WHERE (a.screening ->> 'passed')::boolean) AS screened_in,
               count(*) FILTER (WHERE t.municipal) AS passed_municipal,
               count(*) FILTER (WHERE t.provincial) AS passed_provincial,
               count(*) FILTER (WHERE t.national) AS passed_national,
               count(*) FILTER (WHERE n.on_notice) AS on_notice,
               count(r.id) AS recognized
        FROM applications a
        LEFT JOIN LATERAL (
            SELECT bool_or(rt.stage = 'municipal' AND rt.decision = 'approve') AS municipal,
                   bool_or(rt.stage = 'provincial' AND rt.decision = 'approve') AS provincial,
                   bool_or(rt.stage = 'national' AND rt.decision = 'approve') AS national
            FROM review_tasks rt WHERE rt.application_id = a.id
        ) t ON true
        LEFT JOIN LATERAL (
            SELECT true AS on_notice FROM transitions x
            WHERE x.application_id = a.id AND x.to_status = 'public_notice' LIMIT 1
        ) n ON true
        LEFT JOIN recognitions r ON r.application_id = a.id
        WHERE {cohort.where()}
        GROUP BY a.tier
        ORDER BY a.tier
    """
    return await _rows(session, sql, cohort.params())


async def screening_rules(session: AsyncSession, cohort: Cohort) -> list[Row]:
    """Per tier and screening rule: how many screened applications it was checked on and how many passed."""
    sql = f"""
        SELECT a.tier, rule ->> 'rule' AS rule, min(rule ->> 'description') AS description,
               count(*) AS checked,
               count(*) FILTER (WHERE (rule ->> 'passed')::boolean) AS passed
        FROM applications a
        CROSS JOIN LATERAL jsonb_array_elements(a.screening -> 'rules') AS rule
        WHERE {cohort.where()} AND a.screening IS NOT NULL
        GROUP BY a.tier, rule ->> 'rule'
        ORDER BY a.tier, rule ->> 'rule'
    """
    return await _rows(session, sql, cohort.params())


async def review_times(session: AsyncSession, cohort: Cohort, *, now: datetime) -> list[Row]:
    """Per review stage: tasks decided (approve, reject or return), the 50th and 90th percentiles of the
    time from a task's opening to its decision (seconds), decisions after the due time, tasks still open
    past it."""
    sql = f"""
        SELECT t.stage,
               count(*) FILTER (WHERE t.decision IS NOT NULL) AS decided,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t.closed_at - t.created_at))
                   FILTER (WHERE t.decision IS NOT NULL AND t.closed_at IS NOT NULL) AS p50_seconds,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM t.closed_at - t.created_at))
                   FILTER (WHERE t.decision IS NOT NULL AND t.closed_at IS NOT NULL) AS p90_seconds,
               count(*) FILTER (WHERE t.decision IS NOT NULL AND t.closed_at > t.due_at) AS decided_late,
               count(*) FILTER (WHERE t.status = 'open' AND t.due_at < :now) AS open_overdue,
               count(*) FILTER (WHERE t.status = 'open') AS open
        FROM applications a
        JOIN review_tasks t ON t.application_id = a.id
        WHERE {cohort.where()}
        GROUP BY t.stage
    """
    return await _rows(session, sql, cohort.params(now=now))


async def imported_batch(session: AsyncSession, *, program: str, batch: str) -> bool:
    """Whether some recognition of ``program`` was imported from a list of ``batch`` (a report may be asked
    for a ministry's batch the program's file does not name)."""
    cohort = Cohort(program=program, batch=batch)
    sql = f"SELECT EXISTS (SELECT 1 {cohort.imported_from()}) AS found"
    return bool((await _rows(session, sql, cohort.params()))[0]["found"])


async def imported_batches(session: AsyncSession, *, program: str) -> list[str]:
    """The batches the program's imported recognitions carry (a ministry's list's, e.g. ``2024-6``), sorted:
    only imported rows are read (``Cohort.imported_from``)."""
    cohort = Cohort(program=program)
    sql = f"SELECT DISTINCT r.batch {cohort.imported_from()} ORDER BY r.batch"
    return [str(row["batch"]) for row in await _rows(session, sql, cohort.params())]


async def recognitions(session: AsyncSession, cohort: Cohort) -> list[Row]:
    """Recognitions through review (``recognized``) and imported (``imported``), in one statement over
    three grouping sets (``grouping``): per province, city and tier (``region``: the 6-digit code the
    application was filed in; an imported one's, its enterprise's), per industry and tier (``industry``), per
    tier (``tier``)."""
    sql = f"""
        WITH recognized AS (
            SELECT a.region_code, e.industry, a.tier, false AS imported
            FROM applications a
            JOIN recognitions r ON r.application_id = a.id
            JOIN enterprises e ON e.uscc = a.uscc
            WHERE {cohort.where()}
            UNION ALL
            SELECT e.region_code, e.industry, r.tier, true
            {cohort.imported_from(enterprises=True)}
        ),
        coded AS (
            SELECT substr(region_code, 1, 2) || '0000' AS province, substr(region_code, 1, 4) || '00' AS city,
                   industry, tier, imported
            FROM recognized
        )
        SELECT CASE GROUPING(province, city, industry) WHEN 1 THEN 'region' WHEN 6 THEN 'industry'
                   ELSE 'tier' END AS grouping,
               province, city, industry, tier,
               count(*) FILTER (WHERE NOT imported) AS recognized,
               count(*) FILTER (WHERE imported) AS imported
        FROM coded
        GROUP BY GROUPING SETS ((province, city, tier), (industry, tier), (tier))
        ORDER BY 1, province, city, industry, tier
    """
    return await _rows(session, sql, cohort.params())


async def benefits(session: AsyncSession, cohort: Cohort) -> list[Row]:
    """What the cohort's recognitions triggered: per kind, tier and status, how many and the amounts - those
    of recognitions through review (``granted``, ``amount``) and of imported ones apart."""
    sql = f"""
        WITH recs AS (
            SELECT r.id, false AS imported
            FROM applications a JOIN recognitions r ON r.application_id = a.id
            WHERE {cohort.where()}
            UNION ALL
            SELECT r.id, true {cohort.imported_from()}
        )
        SELECT b.kind, b.tier, b.status,
               count(*) FILTER (WHERE NOT recs.imported) AS granted,
               coalesce(sum(b.amount) FILTER (WHERE NOT recs.imported), 0) AS amount,
               count(*) FILTER (WHERE recs.imported) AS imported_granted,
               coalesce(sum(b.amount) FILTER (WHERE recs.imported), 0) AS imported_amount
        FROM recs
        JOIN benefits b ON b.recognition_id = recs.id
        GROUP BY b.kind, b.tier, b.status
        ORDER BY b.kind, b.tier, b.status
    """
    return await _rows(session, sql, cohort.params())


async def money(session: AsyncSession, cohort: Cohort) -> list[Row]:
    """Per payout kind: payouts requested, the amount awaiting approval or payment, paid out by the bank,
    repaid, and outstanding (paid out and not repaid: the loans; a listing reward is a grant)."""
    sql = f"""
        WITH recs AS (
            SELECT r.id FROM applications a JOIN recognitions r ON r.application_id = a.id
            WHERE {cohort.where()}
        ),
        payouts AS (
            SELECT 'drawdown' AS kind, d.status, d.amount, d.repaid, x.status AS paid_status
            FROM recs
            JOIN credit_lines c ON c.recognition_id = recs.id
            JOIN drawdowns d ON d.credit_line_id = c.id
            LEFT JOIN disbursements x ON x.drawdown_id = d.id
            UNION ALL
            SELECT 'bridge_loan', l.status, l.amount, l.repaid, x.status
            FROM recs
            JOIN bridge_loans l ON l.recognition_id = recs.id
            LEFT JOIN disbursements x ON x.bridge_loan_id = l.id
            UNION ALL
            SELECT 'listing_reward', w.status, w.amount, 0, x.status
            FROM recs
            JOIN listing_rewards w ON w.recognition_id = recs.id
            LEFT JOIN disbursements x ON x.listing_reward_id = w.id
        )
        SELECT kind, count(*) AS payouts,
               coalesce(sum(amount) FILTER (WHERE status IN ('pending_approval', 'approved')
                                            AND paid_status IS DISTINCT FROM 'paid'), 0) AS pending,
               coalesce(sum(amount) FILTER (WHERE paid_status = 'paid'), 0) AS disbursed,
               coalesce(sum(repaid) FILTER (WHERE paid_status = 'paid'), 0) AS repaid
        FROM payouts
        GROUP BY kind
    """
    return await _rows(session, sql, cohort.params())


async def achieved_by_year(session: AsyncSession, cohort: Cohort) -> list[Row]:
    """New recognitions of the program (every batch: a plan counts years) per calendar year in China
    Standard Time and tier, through review (``reviewed``) and imported (``imported``: its validity starts on
    the list's recognized_on in China, so that day's year); re-reviews renew a title rather than add one, a
    revoked title does not count."""
    sql = f"""
        WITH titles AS (
            SELECT r.valid_from, a.tier, false AS imported
            FROM applications a
            JOIN recognitions r ON r.application_id = a.id
            WHERE {cohort.where(by_batch=False)} AND a.re_review_of IS NULL AND r.status <> 'revoked'
            UNION ALL
            SELECT r.valid_from, r.tier, true
            {cohort.imported_from(by_batch=False)} AND r.status <> 'revoked'
        )
        SELECT extract(year FROM valid_from AT TIME ZONE 'Asia/Shanghai')::int AS year, tier,
               count(*) FILTER (WHERE NOT imported) AS reviewed,
               count(*) FILTER (WHERE imported) AS imported
        FROM titles
        GROUP BY 1, 2
        ORDER BY 1, 2
    """
    return await _rows(session, sql, cohort.params())


# --- cultivation plans -------------------------------------------------------------------------------------


async def stored_plan(session: AsyncSession, program: str) -> Sequence[CultivationPlan]:
    result = await session.scalars(
        select(CultivationPlan)
        .where(CultivationPlan.program == program)
        .order_by(CultivationPlan.year, CultivationPlan.tier)
        .execution_options(populate_existing=True)  # a replaced plan's rows, not the session's old copies
    )
    return result.all()


async def replace_plan(
    session: AsyncSession, program: str, *, lines: Sequence[tuple[int, str, int]], set_by: str
) -> None:
    """The program's stored plan becomes ``lines`` (year, tier, target); none: the file's plan again."""
    await session.execute(delete(CultivationPlan).where(CultivationPlan.program == program))
    if lines:
        await session.execute(
            insert(CultivationPlan),
            [
                {"program": program, "year": year, "tier": tier, "target": target, "set_by": set_by}
                for year, tier, target in lines
            ],
        )
