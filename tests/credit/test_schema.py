"""The credit-schema migration installs the ledger's triggers (that the schema matches the models is
tests/platform/test_migrations.py's no-drift check, over every table)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


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
