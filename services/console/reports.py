"""The reports page of the console: a program's cohort report (a batch or all of them) - the funnel, review
times and breaches, screening pass rates, recognitions by region and industry, benefits and money, the
cultivation plan against what was achieved - with its charts drawn on the server (SVG) and the same report
to download as CSV, XLSX or PDF. Recognitions imported from a ministry's list show apart from those through
review and in the totals; the batch selector offers the batches only imported recognitions carry, apart.

The page and the downloads call ``services.reports.service.build_report`` with the signed-in caller, as
``GET /programs/{key}/report`` does, so who sees what is the API's rule: an admin everything, a reviewer its
region, finance the money, anyone else the 403 page."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from services.console.session import SessionUserDep
from services.console.web import ConsoleRoute, render
from services.deps import ResourcesDep, SessionDep
from services.reports import service
from services.reports.charts import charts, to_svg
from services.reports.exports import to_csv, to_xlsx
from services.reports.pdf import to_pdf
from services.reports.schemas import Report

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

REPORTS = "/console/reports"
KeyQuery = Annotated[str, Query(max_length=64)]
FORMATS = {
    "csv": ("text/csv; charset=utf-8", to_csv),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", to_xlsx),
    "pdf": ("application/pdf", to_pdf),
}
DAY = 86400.0


class ReportReader:
    """What the page and the downloads take to read a report - the console session, the request's database
    session and the programs - and ``report``, a program's cohort report as the signed-in caller may read it
    (``GET /programs/{key}/report``)."""

    def __init__(self, session: SessionUserDep, db: SessionDep, resources: ResourcesDep) -> None:
        self.session, self.db, self.programs = session, db, resources.programs

    async def report(self, key: str, batch: str) -> Report:
        """The report of program ``key`` and ``batch`` (empty: every batch)."""
        return await service.build_report(
            self.db,
            user=self.session.user,
            programs=self.programs,
            key=key,
            batch=batch or None,
            now=datetime.now(UTC),
        )


ReaderDep = Annotated[ReportReader, Depends()]


@router.get(REPORTS)
async def reports_page(
    request: Request, reader: ReaderDep, program: KeyQuery = "", batch: KeyQuery = ""
) -> Response:
    """The report of the chosen program (the first by key when none is) and batch (every batch when none)."""
    session, programs = reader.session, reader.programs
    key = program or min(programs)
    report = await reader.report(key, batch)
    named, ministry = await service.batches(reader.db, user=session.user, programs=programs, key=key)
    query = {"program": key, **({"batch": batch} if batch else {})}
    return render(
        request,
        "admin/reports.html",
        {
            "report": report,
            "programs": sorted(programs.values(), key=lambda p: p.key),
            "batches": named,
            "ministry_batches": ministry,
            "chosen_batch": batch,
            # Inline SVG: to_svg escapes every text it writes (labels, industries, titles).
            "charts": [Markup(to_svg(chart)) for chart in charts(report)],
            "downloads": [
                (name.upper(), f"{REPORTS}/export?{urlencode({**query, 'format': name})}") for name in FORMATS
            ],
            "days": lambda seconds: "" if seconds is None else f"{seconds / DAY:.1f}",
            "percent": lambda ratio: "" if ratio is None else f"{100 * ratio:.1f}%",
        },
        session=session,
    )


@router.get(f"{REPORTS}/export")
async def export(
    reader: ReaderDep, format: Literal["csv", "xlsx", "pdf"], program: KeyQuery, batch: KeyQuery = ""
) -> Response:
    """The page's report as a file, rendered as the API renders it."""
    report = await reader.report(program, batch)
    media_type, render_file = FORMATS[format]
    content = await asyncio.to_thread(render_file, report)
    name = f"{report.program}-{report.batch or 'all'}-report.{format}"
    return Response(
        content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
