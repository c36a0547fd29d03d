"""Every list query is index-backed: each collection GET of the OpenAPI document is called, as every kind of
caller, with no filter and with each of its filters, inside the test's transaction; every SELECT it sends to
PostgreSQL is captured and planned again with ``enable_seqscan = off``. The planner then reads a table
sequentially only where no index can serve the query, so a ``Seq Scan`` of a table that grows with the
applications fails the test, naming the operation, the query and the plan.

A new list endpoint is covered without a change here; a new filter is too, as long as ``sample`` can make a
valid value for its schema (it fails loudly where it cannot)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from services.auth import Role
from services.config import Settings
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc

# Tables whose rows grow with enterprises, applications and payouts (not programs' small reference tables).
GROWING = {
    "enterprises",
    "applications",
    "documents",
    "application_documents",
    "review_tasks",
    "transitions",
    "objections",
    "recognitions",
    "benefits",
    "credit_lines",
    "drawdowns",
    "bridge_loans",
    "listing_rewards",
    "payout_approvals",
    "disbursements",
    "ledger_entries",
    "ledger_lines",
    "ledger_accounts",
    "idempotency_keys",
}
USCC = random_uscc("500230")


def callers(settings: Settings) -> dict[str, dict[str, str]]:
    def token(role: Role, sub: str, **claims: Any) -> dict[str, str]:
        return bearer(make_token(settings, role, sub, **claims))

    return {
        "anonymous": {},
        "enterprise": token(Role.enterprise, "plans-ent", uscc=USCC),
        "municipal": token(Role.reviewer, "plans-mun", level="municipal", region="500200"),
        "provincial": token(Role.reviewer, "plans-prov", level="provincial", region="500000"),
        "national": token(Role.reviewer, "plans-nat", level="national", region="000000"),
        "finance": token(Role.finance, "plans-fin"),
        "admin": token(Role.admin, "plans-admin"),
    }


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [_resolve(s, spec) for s in schema[key] if s.get("type") != "null"]
            return options[0]
    return schema


def sample(name: str, schema: dict[str, Any], spec: dict[str, Any]) -> str:
    """A valid value for a query parameter, from its schema."""
    schema = _resolve(schema, spec)
    if "enum" in schema:
        return str(schema["enum"][0])
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "boolean":
        return "true"
    if kind in ("integer", "number"):
        return str(max(schema.get("minimum", 1), 1))
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "date":
        return "2026-06-01"
    if fmt == "date-time":
        return "2026-06-01T00:00:00Z"
    pattern = schema.get("pattern", "")
    if "0-9A-HJ-NPQRTUWXY" in pattern or name == "uscc":
        return USCC
    if name in ("amount_min", "amount_max") or ("\\d" in pattern and "." in pattern):
        return "1000.00"
    if "^[0-9]{6}$" in pattern or name.startswith("region"):
        return "500230"
    if kind == "string":
        return "demo" if name in ("program", "board", "kind") else "ab"
    raise AssertionError(f"no sample value for query parameter {name}: {schema}")


def list_operations(spec: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for path, item in spec["paths"].items():
        get = item.get("get")
        if get is None or "{" in path or not path.startswith("/api/v1/"):
            continue
        query = [p for p in get.get("parameters", []) if p["in"] == "query" and p["name"] != "cursor"]
        yield path, query


def seq_scans(plan: dict[str, Any]) -> Iterator[str]:
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in GROWING:
        yield plan["Relation Name"]
    for child in plan.get("Plans", []):
        yield from seq_scans(child)


async def test_every_list_query_is_index_backed(
    api_rollback: httpx.AsyncClient, connection: AsyncConnection, settings: Settings
) -> None:
    spec = (await api_rollback.get("/openapi.json")).json()
    captured: list[tuple[str, Any, str]] = []
    current = {"operation": ""}

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, parameters, current["operation"]))

    sync = connection.sync_connection
    assert sync is not None
    event.listen(sync, "before_cursor_execute", capture)
    operations = 0
    try:
        for path, query in list_operations(spec):
            operations += 1
            variants: list[dict[str, str]] = [{}]
            variants += [{p["name"]: sample(p["name"], p["schema"], spec)} for p in query]
            for caller, headers in callers(settings).items():
                for params in variants:
                    current["operation"] = f"GET {path} {params} as {caller}"
                    response = await api_rollback.get(path, params=params, headers=headers)
                    assert response.status_code < 500, (current["operation"], response.text)
    finally:
        event.remove(sync, "before_cursor_execute", capture)
    assert operations >= 8, "the OpenAPI document lost its list operations"

    failures: list[str] = []
    await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    seen: set[tuple[str, str]] = set()
    for statement, parameters, operation in captured:
        key = (statement, repr(parameters))
        if key in seen:
            continue
        seen.add(key)
        result = await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        raw = result.scalar_one()
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        tables = sorted(set(seq_scans(plan)))
        if tables:
            failures.append(f"{operation}: Seq Scan on {tables}\n  {statement}\n  {json.dumps(plan)[:2000]}")
    await connection.exec_driver_sql("SET LOCAL enable_seqscan = on")
    assert len(seen) >= operations, "too few queries were captured to believe the capture works"
    assert not failures, "\n\n".join(failures)
