"""The credit-schema migration matches the models exactly (autogenerate finds no drift in credit tables) and
installs the ledger's triggers."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.credit import models
from services.models import metadata

CREDIT_TABLES = {
    mapper.local_table.name
    for mapper in models.Base.registry.mappers
    if mapper.class_.__module__ == models.__name__
}


def _table_of(diff: Any) -> str:
    """The table a diff entry is about (entries are tuples, or lists of tuples for column changes)."""
    if isinstance(diff, list):
        diff = diff[0]
    kind, subject = diff[0], diff[1]
    if kind in ("add_table", "remove_table"):
        return str(subject.name)
    if kind in ("add_column", "remove_column") or kind.startswith("modify_"):
        return str(diff[2])
    return str(subject.table.name)  # an index or a constraint


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return [d for d in compare_metadata(context, metadata) if _table_of(d) in CREDIT_TABLES]


async def test_autogenerate_finds_no_drift_in_credit_tables(engine: AsyncEngine) -> None:
    assert {
        "ledger_accounts",
        "ledger_entries",
        "ledger_lines",
        "benefits",
        "credit_lines",
        "drawdowns",
        "payout_approvals",
        "disbursements",
    } <= CREDIT_TABLES
    async with engine.connect() as conn:
        assert await conn.run_sync(_drift) == []


async def test_ledger_triggers_are_installed(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT tgname, tgdeferrable, tginitdeferred FROM pg_trigger "
                "WHERE tgrelid::regclass::text LIKE 'ledger_%' AND NOT tgisinternal ORDER BY tgname"
            )
        )
        triggers = {name: (deferrable, deferred) for name, deferrable, deferred in rows}
    assert triggers["ledger_lines_balanced"] == (True, True)
    assert triggers["ledger_entries_balanced"] == (True, True)
    assert {"ledger_lines_append_only", "ledger_entries_append_only", "ledger_accounts_append_only"} <= set(
        triggers
    )
