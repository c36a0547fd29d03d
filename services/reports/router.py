"""HTTP routes of the reports: a program's cohort report (JSON, CSV, XLSX or PDF) and its cultivation plan.
Routes parse, call the service and return; rendering a file runs off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from services.deps import CurrentUserDep, ResourcesDep, SessionDep, StrictQueryRoute
from services.errors import READ_ONE_ERRORS, problem_responses
from services.ratelimit import WriterDep
from services.reports import service
from services.reports.exports import to_csv, to_xlsx
from services.reports.pdf import to_pdf
from services.reports.schemas import PlanRead, PlanUpdate, Report

router = APIRouter(tags=["reports"], route_class=StrictQueryRoute)

KEY_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
ProgramKey = Annotated[str, Path(pattern=KEY_PATTERN)]
BatchQuery = Annotated[
    str | None, Query(pattern=KEY_PATTERN, description="one batch of the program; none: every batch")
]
Format = Literal["json", "csv", "xlsx", "pdf"]
FormatQuery = Annotated[Format, Query(description="json (default), csv, xlsx or pdf")]

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MEDIA: dict[str, tuple[str, Callable[[Report], bytes]]] = {
    "csv": ("text/csv; charset=utf-8", to_csv),
    "xlsx": (XLSX, to_xlsx),
    "pdf": ("application/pdf", to_pdf),
}
REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **READ_ONE_ERRORS,
    200: {
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            XLSX: {"schema": {"type": "string", "format": "binary"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "The report as JSON, or with `format` as one CSV (a `section` column), an XLSX "
        "workbook (a sheet per section) or a printable PDF with charts",
    },
}


async def _answer(report: Report, format: Format) -> Any:
    if format == "json":
        return report
    media_type, render = MEDIA[format]
    content = await asyncio.to_thread(render, report)
    name = f"{report.program}-{report.batch or 'all'}-report.{format}"
    return Response(
        content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


class ReportQuery:
    """What both report routes take besides the program - the request's session, the reader, the resources,
    the ``batch`` and the ``format`` - and ``answer``, the program's report in that format."""

    def __init__(
        self,
        session: SessionDep,
        user: CurrentUserDep,
        resources: ResourcesDep,
        batch: BatchQuery = None,
        format: FormatQuery = "json",
    ) -> None:
        self.session, self.user, self.resources = session, user, resources
        self.batch, self.format = batch, format

    async def answer(self, key: str) -> Any:
        report = await service.build_report(
            self.session,
            user=self.user,
            programs=self.resources.programs,
            key=key,
            batch=self.batch,
            now=datetime.now(UTC),
        )
        return await _answer(report, self.format)


ReportDep = Annotated[ReportQuery, Depends()]


@router.get("/programs/{key}/report", response_model=Report, responses=REPORT_RESPONSES)
async def program_report(key: ProgramKey, query: ReportDep) -> Any:
    """The program's cohort report (of one `batch`, or every batch): the funnel per tier, screening pass rate
    per rule, review time per stage (p50, p90) and SLA breaches, recognitions by region and industry,
    benefits granted, money disbursed and outstanding, and the cultivation plan against what was achieved.
    Admin: everything; reviewer: everything, over the applications of its region; finance: the money
    (`benefits`, `money`; other sections null)."""
    return await query.answer(key)


@router.get("/reports/cohort", response_model=Report, responses=REPORT_RESPONSES)
async def cohort_report(
    program: Annotated[str, Query(pattern=KEY_PATTERN, description="the program's key")], query: ReportDep
) -> Any:
    """`GET /programs/{program}/report`, under the name ../shared/API.md gives it."""
    return await query.answer(program)


@router.get("/programs/{key}/plan", response_model=PlanRead, responses=READ_ONE_ERRORS)
async def read_plan(
    key: ProgramKey, session: SessionDep, user: CurrentUserDep, resources: ResourcesDep
) -> Any:
    """The program's three-year cultivation plan: targets per tier and year, from its policy file (`source`
    `file`) or as an admin set them (`admin`); read by whoever reads its report."""
    return await service.plan(session, user=user, programs=resources.programs, key=key)


@router.put(
    "/programs/{key}/plan", response_model=PlanRead, responses=problem_responses(401, 403, 404, 422, 429)
)
async def replace_plan(
    key: ProgramKey, body: PlanUpdate, session: SessionDep, user: WriterDep, resources: ResourcesDep
) -> Any:
    """Replace the program's cultivation plan (admin): `targets`, each a `year`, a `tier` of the program and a
    `target` (new recognitions wanted that year); each year and tier once. An empty list returns to the plan
    of the program's file. The same body twice changes nothing."""
    return await service.replace_plan(session, user=user, programs=resources.programs, key=key, data=body)
