"""``payouts_inbox_p99_ms``: a finance officer's first page of the inbox (``GET /payouts`` filtered to
``awaiting_approval``), wrk with 16 connections like ``read_api``, on a database with a year of payouts.

Set-up, not timed: a year of payouts written in bulk with SQL - drawdowns on credit lines opened for the
enterprises already registered, bridge loans from the bench program's fund, listing rewards - spread evenly
over the last 365 days, most decided long ago (disbursed, some rejected, expired, failed; bridge loans paid
out two months ago repaid), those of the last 20 days mostly still awaiting approval, each with the finance
decisions its status implies; plus the ledger (100,000 lines at full scale). Every seeded payout is marked
as having its workflow, so the worker's reconciler leaves them alone, and no timer of theirs exists: the
benchmark only reads them. Then the tables are analysed, as autovacuum would have done by then.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.journey import PROGRAM, TIER
from bench.stack import Stack
from services.auth import Role

if TYPE_CHECKING:
    from bench.run import Figures

FULL = {"drawdown": 3_000, "bridge_loan": 1_500, "listing_reward": 1_500}
LEDGER_LINES = 100_000
OFFICER = "finance-inbox-bench"  # decided none of the seeded payouts: each awaiting one is its to decide
SEEDERS = ("finance-seed-a", "finance-seed-b")
BOARDS = {"incubation": "30000.00", "growth": "250000.00", "srdi": "300000.00"}


def _statuses(count: int, *, repaid: bool = False) -> str:
    """A CTE ``s(i, at, status, deadline)`` of ``count`` payouts requested evenly over the last year, oldest
    first: two in three of the last 20 days await approval, the rest are decided."""
    return f"""
        s0 AS (
            SELECT i, now() - ({count} - i) * (interval '365 days' / {count}) AS at
            FROM generate_series(0, {count - 1}) AS i
        ),
        s AS (
            SELECT i, at,
                CASE
                    WHEN at > now() - interval '20 days' AND i % 3 <> 0 THEN 'pending_approval'
                    WHEN i % 20 IN (0, 1) THEN 'rejected'
                    WHEN i % 20 = 2 THEN 'expired'
                    WHEN i % 20 = 3 THEN 'failed'
                    {"WHEN at < now() - interval '60 days' AND i % 2 = 0 THEN 'repaid'" if repaid else ""}
                    ELSE 'disbursed'
                END AS status,
                CASE
                    WHEN at > now() - interval '20 days' THEN now() + (1 + i % 10) * interval '1 day'
                    ELSE at + interval '10 days'
                END AS deadline
            FROM s0
        )"""


# The columns every payout table has (services/credit/models.py PayoutColumns), from ``s`` and ``amount``.
PAYOUT_VALUES = """
    s.status,
    'owner-' || f.uscc,
    CASE WHEN amount > 1000000 THEN 2 ELSE 1 END,
    s.deadline,
    CASE s.status
        WHEN 'rejected' THEN 'rejected by finance: bench'
        WHEN 'expired' THEN 'the approval deadline passed'
        WHEN 'failed' THEN 'the bank refused the payment: bench'
    END,
    CASE WHEN s.status = 'pending_approval' THEN NULL ELSE s.at + interval '1 day' END,
    s.at,
    true"""
PAYOUT_COLUMNS = (
    "status, requested_by, required_approvals, approval_deadline, reason, decided_at, created_at, "
    "workflow_started"
)


async def _seed(conn: AsyncConnection, *, scale: float) -> dict[str, int]:
    """Write the payouts, their approvals and the ledger; returns what was written."""
    run = conn.exec_driver_sql
    await run(
        "CREATE TEMP TABLE inbox_firms ON COMMIT DROP AS "
        "SELECT (row_number() OVER (ORDER BY uscc))::int - 1 AS n, uscc FROM enterprises"
    )
    firms = int((await run("SELECT count(*) FROM inbox_firms")).scalar_one())
    if firms == 0:
        raise SystemExit("payouts_inbox: no enterprises to seed payouts for")
    # A line takes at most two drawdowns (each at most 2,000,000.00 of its 4,000,000.00), a firm a reward
    # per board.
    counts = {kind: max(30, round(full * scale)) for kind, full in FULL.items()}
    counts["drawdown"] = min(counts["drawdown"], 2 * firms)
    counts["listing_reward"] = min(counts["listing_reward"], len(BOARDS) * firms)
    await run(
        "CREATE TEMP TABLE seeded (kind text, id uuid, status text, required int, at timestamptz) "
        "ON COMMIT DROP"
    )

    await run(
        "CREATE TEMP TABLE inbox_lines ON COMMIT DROP AS "
        "SELECT n, uscc, gen_random_uuid() AS id FROM inbox_firms"
    )
    await run(
        "INSERT INTO credit_lines "
        "(id, recognition_id, uscc, program, tier, credit_limit, reserved, drawn, status, opened_at) "
        f"SELECT id, gen_random_uuid(), uscc, '{PROGRAM}', '{TIER}', 4000000, 0, 0, 'active', "
        "now() - interval '400 days' FROM inbox_lines"
    )
    n = counts["drawdown"]
    await run(
        f"""WITH {_statuses(n)},
        new AS (
            INSERT INTO drawdowns (id, credit_line_id, uscc, program, tier, amount, {PAYOUT_COLUMNS})
            SELECT gen_random_uuid(), f.id, f.uscc, '{PROGRAM}', '{TIER}', amount, {PAYOUT_VALUES}
            FROM s
            JOIN inbox_lines f ON f.n = s.i % {firms}
            CROSS JOIN LATERAL (SELECT (10000 + s.i * 7919 % 1990000)::numeric(18, 2) AS amount) a
            RETURNING id, status, required_approvals, created_at
        )
        INSERT INTO seeded SELECT 'drawdown', * FROM new"""
    )
    await run(
        """UPDATE credit_lines l SET reserved = d.reserved, drawn = d.drawn
        FROM (
            SELECT credit_line_id,
                coalesce(sum(amount) FILTER (WHERE status IN ('pending_approval', 'approved')), 0)
                    AS reserved,
                coalesce(sum(amount) FILTER (WHERE status = 'disbursed'), 0) AS drawn
            FROM drawdowns WHERE credit_line_id IN (SELECT id FROM inbox_lines)
            GROUP BY credit_line_id
        ) d
        WHERE l.id = d.credit_line_id"""
    )

    await run(
        f"INSERT INTO fund_pools (program, capacity, committed) VALUES ('{PROGRAM}', 100000000000, 0) "
        "ON CONFLICT (program) DO NOTHING"
    )
    n = counts["bridge_loan"]
    await run(
        f"""WITH {_statuses(n, repaid=True)},
        new AS (
            INSERT INTO bridge_loans (
                id, program, uscc, tier, recognition_id, amount, term_days, purpose,
                due_on, repaid_at, repaid_by, {PAYOUT_COLUMNS}
            )
            SELECT gen_random_uuid(), '{PROGRAM}', f.uscc, '{TIER}', gen_random_uuid(), amount, 15,
                'bench: repay a maturing bank loan',
                CASE WHEN s.status IN ('disbursed', 'repaid') THEN (s.at + interval '22 days')::date END,
                CASE WHEN s.status = 'repaid' THEN s.at + interval '20 days' END,
                CASE WHEN s.status = 'repaid' THEN '{SEEDERS[1]}' END,
                {PAYOUT_VALUES}
            FROM s
            JOIN inbox_firms f ON f.n = (s.i * 7) % {firms}
            CROSS JOIN LATERAL (SELECT (100000 + s.i * 7919 % 4900000)::numeric(18, 2) AS amount) a
            RETURNING id, status, required_approvals, created_at
        )
        INSERT INTO seeded SELECT 'bridge_loan', * FROM new"""
    )
    await run(
        f"""UPDATE fund_pools SET committed = (
            SELECT coalesce(sum(amount), 0) FROM bridge_loans
            WHERE program = '{PROGRAM}' AND status IN ('pending_approval', 'approved', 'disbursed')
        )
        WHERE program = '{PROGRAM}'"""
    )

    n = counts["listing_reward"]
    boards = ", ".join(f"('{board}', {i}, {amount})" for i, (board, amount) in enumerate(BOARDS.items()))
    await run(
        f"""WITH {_statuses(n)},
        boards(board, k, reward) AS (VALUES {boards}),
        new AS (
            INSERT INTO listing_rewards (
                id, uscc, board, program, tier, recognition_id, amount, listed_on, security_code,
                {PAYOUT_COLUMNS}
            )
            SELECT gen_random_uuid(), f.uscc, b.board, '{PROGRAM}', '{TIER}', gen_random_uuid(), amount,
                (s.at - interval '10 days')::date, (800000 + s.i)::text, {PAYOUT_VALUES}
            FROM s
            JOIN boards b ON b.k = s.i % {len(BOARDS)}
            JOIN inbox_firms f ON f.n = s.i / {len(BOARDS)}
            CROSS JOIN LATERAL (SELECT b.reward::numeric(18, 2) AS amount) a
            RETURNING id, status, required_approvals, created_at
        )
        INSERT INTO seeded SELECT 'listing_reward', * FROM new"""
    )

    # The decisions each status implies: approvals (two above the threshold) for what was approved, one
    # rejection, none for what expired; one of two approvals so far on half the dual ones still awaiting.
    for kind in FULL:
        await run(
            f"""INSERT INTO payout_approvals ({kind}_id, approver, decision, reason, created_at)
            SELECT id, a.approver, CASE WHEN status = 'rejected' THEN 'reject' ELSE 'approve' END,
                'bench', at + a.after
            FROM seeded
            CROSS JOIN (
                VALUES ('{SEEDERS[0]}', 1, interval '2 hours'), ('{SEEDERS[1]}', 2, interval '3 hours')
            ) AS a(approver, nth, after)
            WHERE kind = '{kind}' AND (
                (status IN ('approved', 'disbursed', 'repaid', 'failed') AND a.nth <= required)
                OR (status = 'rejected' AND a.nth = 1)
                OR (status = 'pending_approval' AND required = 2 AND a.nth = 1
                    AND get_byte(uuid_send(id), 0) % 2 = 0)
            )"""
        )

    # The ledger: entries of two lines each, debiting an enterprise's receivable against bank settlement.
    entries = round(LEDGER_LINES * scale) // 2 or 1
    await run(
        "INSERT INTO ledger_accounts (code, kind) "
        "SELECT 'credit_receivable:' || uscc, 'credit_receivable' FROM inbox_firms "
        "UNION ALL SELECT 'bank_settlement', 'bank_settlement' ON CONFLICT (code) DO NOTHING"
    )
    await run(
        f"""CREATE TEMP TABLE inbox_entries ON COMMIT DROP AS
        SELECT i, gen_random_uuid() AS id, a.id AS account,
            (1000 + i * 7919 % 1000000)::numeric(18, 2) AS amount,
            now() - ({entries} - i) * (interval '365 days' / {entries}) AS at
        FROM generate_series(0, {entries - 1}) AS i
        JOIN inbox_firms f ON f.n = i % {firms}
        JOIN ledger_accounts a ON a.code = 'credit_receivable:' || f.uscc"""
    )
    await run(
        "INSERT INTO ledger_entries (id, idempotency_key, memo, created_at) "
        "SELECT id, 'bench-seed:' || id, 'bench posting ' || i, at FROM inbox_entries"
    )
    await run(
        """INSERT INTO ledger_lines (entry_id, account_id, debit, credit)
        SELECT id, account, amount, 0 FROM inbox_entries
        UNION ALL
        SELECT id, (SELECT id FROM ledger_accounts WHERE code = 'bank_settlement'), 0, amount
        FROM inbox_entries"""
    )
    awaiting = await run("SELECT count(*) FROM seeded WHERE status = 'pending_approval'")
    return {**counts, "awaiting": int(awaiting.scalar_one()), "ledger_lines": 2 * entries}


async def payouts_inbox(
    stack: Stack, figures: Figures, engine: AsyncEngine, *, scale: float, seconds: float
) -> None:
    from bench.run import wrk  # the load generator every read benchmark uses (run.py calls this module)

    async with engine.begin() as conn:
        seeded = await _seed(conn, scale=scale)
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))  # the statistics autovacuum would have gathered by now
        lines = (await conn.execute(text("SELECT count(*) FROM ledger_lines"))).scalar_one()
    token = stack.token(Role.finance, OFFICER)
    url = f"{stack.api_url}/api/v1/payouts?status=awaiting_approval"
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.get(url, headers={"Authorization": f"Bearer {token}"})
    if first.status_code != 200:
        raise SystemExit(f"GET /payouts: {first.status_code} {first.text[:300]}")
    shown = len(first.json()["items"])
    warmup = min(3.0, seconds / 3)
    await asyncio.to_thread(wrk, url, warmup, token)
    rps, p99 = await asyncio.to_thread(wrk, url, seconds, token)
    payouts = sum(seeded[kind] for kind in FULL)
    figures.add(
        "payouts_inbox_p99_ms",
        p99,
        "ms",
        goal="<= 25",
        met=p99 <= 25,
        note=f"GET /payouts?status=awaiting_approval as finance, first page ({shown} items), {rps:.0f} "
        f"requests/s; {payouts} payouts seeded ({seeded['drawdown']} drawdowns, {seeded['bridge_loan']} "
        f"bridge loans, {seeded['listing_reward']} listing rewards; {seeded['awaiting']} awaiting "
        f"approval), {lines} ledger lines",
    )
