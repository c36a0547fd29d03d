"""The report as tables - one per section - and those tables as one CSV file or an XLSX workbook.

Text a spreadsheet could read as a formula never reaches one as such: in the CSV a cell starting with
``= + - @`` (or a tab or CR) gets a leading ``'`` (``csv_safe``, the pool importer's rule), in the workbook
every text cell is stored as a string, never a formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from services.pools.rules import csv_safe
from services.reports import schemas
from services.reports.schemas import Report

Cell = str | int | float | None

# The sections in the order every format shows them, with their titles (English, Chinese).
SECTIONS: dict[str, tuple[str, str]] = {
    "funnel": ("Funnel by tier", "申报漏斗（按层级）"),
    "screening_rules": ("Screening pass rate per rule", "形式审查各规则通过率"),
    "review_times": ("Review time and SLA breaches per stage", "各审查阶段用时与超时"),
    "by_region": ("Recognitions by region", "认定企业（按地区）"),
    "by_industry": ("Recognitions by industry", "认定企业（按行业）"),
    "benefits": ("Benefits granted", "兑现政策"),
    "money": ("Money disbursed and outstanding", "资金拨付与余额"),
    "plan": ("Cultivation plan: planned against achieved", "三年培育计划：计划与完成"),
}

ROW_MODELS: dict[str, type[BaseModel]] = {
    "funnel": schemas.FunnelRow,
    "screening_rules": schemas.RuleRow,
    "review_times": schemas.StageTimes,
    "by_region": schemas.RegionRow,
    "by_industry": schemas.IndustryRow,
    "benefits": schemas.BenefitRow,
    "money": schemas.MoneyRow,
    "plan": schemas.PlanRow,
}


@dataclass(frozen=True, slots=True)
class Table:
    key: str
    title: str
    title_zh: str
    columns: list[str]
    rows: list[list[Cell]]


def _cell(value: object) -> Cell:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def tables(report: Report) -> list[Table]:
    """Every section the report holds (a section the caller may not read is left out)."""
    result = []
    for key, (title, title_zh) in SECTIONS.items():
        rows = getattr(report, key)
        if rows is None:
            continue
        fields = _columns(key)
        result.append(
            Table(
                key=key,
                title=title,
                title_zh=title_zh,
                columns=fields,
                rows=[[_cell(getattr(row, name)) for name in fields] for row in rows],
            )
        )
    return result


def _columns(key: str) -> list[str]:
    return list(ROW_MODELS[key].model_fields)


def meta(report: Report) -> list[tuple[str, str]]:
    """What the figures cover, and - when the caller reads the funnel - the recognitions in one line: through
    review and imported from ministry lists (which the funnel's steps do not count)."""
    lines = [
        ("program", report.program),
        ("program_name", report.program_name),
        ("batch", report.batch or "all"),
        ("region", report.region or "all"),
        ("generated_at", report.generated_at.isoformat()),
        ("plan_source", report.plan_source),
    ]
    if report.funnel is not None:
        reviewed = sum(row.recognized for row in report.funnel)
        imported = sum(row.imported for row in report.funnel)
        lines.append(
            (
                "recognized",
                f"{reviewed + imported} ({reviewed} through review, {imported} imported from lists)",
            )
        )
    return lines


def _csv_text(value: Cell) -> str:
    if value is None:
        return ""
    return csv_safe(value) if isinstance(value, str) else str(value)


def to_csv(report: Report) -> bytes:
    """One CSV: a ``section`` column, then the union of the sections' columns (empty where a section has
    none); UTF-8 with a byte order mark, which spreadsheet programs need to read Chinese text."""
    sections = tables(report)
    columns: list[str] = []
    for table in sections:
        columns += [name for name in table.columns if name not in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["section", *columns])
    for table in sections:
        for row in table.rows:
            values = dict(zip(table.columns, row, strict=True))
            writer.writerow([table.key, *(_csv_text(values.get(name)) for name in columns)])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(report: Report) -> bytes:
    """A workbook: a ``report`` sheet (what the figures cover), then one sheet per section."""
    from openpyxl import Workbook  # type: ignore[import-untyped]
    from openpyxl.styles import Font  # type: ignore[import-untyped]

    book = Workbook()
    first = book.active
    assert first is not None
    first.title = "report"
    for name, value in meta(report):
        _append(first, [name, value])
    for table in tables(report):
        sheet = book.create_sheet(table.key)
        _append(sheet, table.columns)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in table.rows:
            _append(sheet, row)
        sheet.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _append(sheet: Any, values: Sequence[Cell]) -> None:
    """A row whose text cells are strings whatever they start with (openpyxl takes '=...' for a formula)."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # type: ignore[import-untyped]

    row = sheet.max_row + 1 if sheet.max_row > 1 or sheet.cell(1, 1).value is not None else 1
    for column, value in enumerate(values, start=1):
        cell = sheet.cell(row=row, column=column)
        if isinstance(value, str):
            cell.value = ILLEGAL_CHARACTERS_RE.sub("", value)  # control characters XML cannot hold
            cell.data_type = "s"
        else:
            cell.value = value
