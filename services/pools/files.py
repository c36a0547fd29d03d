"""Reading a pool file: CSV (UTF-8 with or without BOM, else GBK/GB18030) or XLSX, headers in Chinese or
English. Pure: bytes in, rows of text out, or a ``FileRefused`` naming what is wrong with the file as a whole
(nothing of a refused file is ever written). Cells are never evaluated: an XLSX formula arrives as its text
(``=SUM(...)``), which the row checks refuse (services/pools/rules.py)."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import ClassVar, Literal

__all__ = [
    "COLUMNS",
    "MAX_ROWS",
    "FileRefused",
    "PoolFile",
    "Row",
    "read_pool_file",
]

MAX_ROWS = 50_000
"""Rows a pool file may hold (the largest published pool, Zhejiang's, has ~10,100); more: a 413, split it."""

Column = Literal["uscc", "name", "region", "industry", "tier", "notes"]
COLUMNS: tuple[Column, ...] = ("uscc", "name", "region", "industry", "tier", "notes")
REQUIRED: frozenset[Column] = frozenset({"uscc", "name", "region", "industry", "tier"})

# Header spellings, compared after `_header_key` (trimmed, lower case, spaces and hyphens as underscores).
HEADERS: dict[str, Column] = {
    "uscc": "uscc",
    "统一社会信用代码": "uscc",
    "社会信用代码": "uscc",
    "信用代码": "uscc",
    "name": "name",
    "enterprise_name": "name",
    "名称": "name",
    "企业名称": "name",
    "region": "region",
    "region_code": "region",
    "地区": "region",
    "地区代码": "region",
    "行政区划代码": "region",
    "区划代码": "region",
    "industry": "industry",
    "行业": "industry",
    "所属行业": "industry",
    "tier": "tier",
    "tier_aimed": "tier",
    "tier_aimed_at": "tier",
    "目标梯度": "tier",
    "培育梯度": "tier",
    "梯度": "tier",
    "notes": "notes",
    "note": "notes",
    "备注": "notes",
}

Row = tuple[int, tuple[str, ...]]
"""A data row: its line (as a spreadsheet numbers it, the header is 1) and its cells in ``COLUMNS`` order."""


class FileRefused(ValueError):
    """The file as a whole cannot be read as a pool; ``status`` is the HTTP status that says so."""

    status: ClassVar[int] = 422

    def __init__(self, detail: str, *, field: str = "file") -> None:
        super().__init__(detail)
        self.detail, self.field = detail, field


class UnsupportedFile(FileRefused):
    status = 415


class TooManyRows(FileRefused):
    status = 413


@dataclass(frozen=True)
class PoolFile:
    format: Literal["csv", "xlsx"]
    encoding: str | None  # CSV only: utf-8, utf-8-sig or gb18030
    rows: list[Row]


def _header_key(text: str) -> str:
    return text.strip().lstrip("\ufeff").strip().lower().replace(" ", "_").replace("-", "_")


def _columns(header: list[str]) -> list[Column | None]:
    """Each header cell's column (None: an empty cell); unknown or repeated headers refuse the file."""
    found: list[Column | None] = []
    unknown = []
    for cell in header:
        key = _header_key(cell)
        if not key:
            found.append(None)
            continue
        column = HEADERS.get(key)
        if column is None:
            unknown.append(cell.strip())
        elif column in found:
            raise FileRefused(f"The column {column!r} appears twice in the header (as {cell.strip()!r}).")
        found.append(column)
    if unknown:
        raise FileRefused(
            "Unknown columns in the header: "
            + ", ".join(repr(u[:50]) for u in unknown[:5])
            + ". The columns are USCC, name, region, industry, tier, notes "
            "(or 统一社会信用代码, 名称, 地区, 行业, 目标梯度, 备注)."
        )
    missing = [c for c in COLUMNS if c in REQUIRED and c not in found]
    if missing:
        raise FileRefused(
            "The header lacks the columns " + ", ".join(missing) + " (the first row names the columns)."
        )
    return found


def _text(value: object) -> str:
    """A cell as the text it shows: integers without a decimal point (a region code typed as a number)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    text = getattr(value, "text", None)  # an array formula: its text, never a value
    return str(text if isinstance(text, str) else value)


def _rows(lines: Iterator[tuple[int, list[object]]]) -> list[Row]:
    """Data rows in ``COLUMNS`` order from (line, raw cells), the first being the header; blank rows are
    skipped (their lines still count)."""
    try:
        _, header = next(lines)
    except StopIteration:
        raise FileRefused("The file is empty: the first row names the columns.") from None
    columns = _columns([_text(c) for c in header])
    where = {column: index for index, column in enumerate(columns) if column is not None}
    rows: list[Row] = []
    for line, raw in lines:
        cells = [_text(c) for c in raw]
        if not any(c.strip() for c in cells):
            continue
        extra = [c for i, c in enumerate(cells) if c.strip() and (i >= len(columns) or columns[i] is None)]
        if extra:
            raise FileRefused(f"Line {line} has a value in a column without a header: {extra[0][:50]!r}.")
        if len(rows) >= MAX_ROWS:
            raise TooManyRows(f"A pool file holds at most {MAX_ROWS:,} rows; split this one into several.")
        rows.append(
            (line, tuple(cells[where[c]] if c in where and where[c] < len(cells) else "" for c in COLUMNS))
        )
    if not rows:
        raise FileRefused("The file has a header but no rows.")
    return rows


def _decode(content: bytes) -> tuple[str, str]:
    """The text and the encoding it was in: UTF-8 (with or without BOM), else GB18030 (a superset of GBK)."""
    if content.startswith(b"\xef\xbb\xbf"):
        encodings: tuple[str, ...] = ("utf-8-sig",)
    elif content.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedFile("UTF-16 text is not read: save the file as CSV UTF-8 (or CSV in GBK) or XLSX.")
    else:
        encodings = ("utf-8", "gb18030")
    for encoding in encodings:
        try:
            return content.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise FileRefused(
        "The file is neither UTF-8 nor GBK/GB18030 text: save it as CSV UTF-8, CSV (GBK) or XLSX.",
        field="encoding",
    )


def _csv_rows(text: str) -> Iterator[tuple[int, list[object]]]:
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        for number, record in enumerate(reader, start=1):
            yield number, list(record)
    except csv.Error as exc:
        raise FileRefused(f"The CSV cannot be read near line {reader.line_num}: {exc}.") from None


def _xlsx_rows(content: bytes) -> Iterator[tuple[int, list[object]]]:
    import openpyxl  # type: ignore[import-untyped]

    try:
        # read_only streams the sheet; data_only=False: a formula is its text, never a computed value.
        book = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=False)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as exc:
        raise FileRefused(f"The XLSX file is broken and cannot be opened ({type(exc).__name__}).") from None
    except Exception as exc:  # openpyxl raises what the XML parser raises
        raise FileRefused(f"The XLSX file is broken and cannot be read ({type(exc).__name__}).") from None
    try:
        sheet = book.worksheets[0] if book.worksheets else None
        if sheet is None:
            raise FileRefused("The XLSX file has no worksheet.")
        try:
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                yield number, list(values)
        except FileRefused:
            raise
        except Exception as exc:
            raise FileRefused(f"The XLSX file is broken and cannot be read ({type(exc).__name__}).") from None
    finally:
        book.close()


def read_pool_file(content: bytes, filename: str | None = None) -> PoolFile:
    """The rows of a pool file, or ``FileRefused`` (415: not CSV or XLSX; 413: too many rows; 422: broken)."""
    name = (filename or "").lower()
    if content.startswith(b"PK\x03\x04"):
        return PoolFile("xlsx", None, _rows(_xlsx_rows(content)))
    if name.endswith((".xlsx", ".xlsm")):
        raise FileRefused("The file is named .xlsx but is not an XLSX workbook (it is broken or renamed).")
    if content.startswith(b"\xd0\xcf\x11\xe0") or name.endswith(".xls"):
        raise UnsupportedFile("Old Excel (.xls) files are not read: save the file as XLSX or CSV.")
    if content.startswith(b"%PDF") or b"\x00" in content[:4096]:
        raise UnsupportedFile("The file is neither CSV nor XLSX.")
    text, encoding = _decode(content)
    return PoolFile("csv", encoding, _rows(_csv_rows(text)))
