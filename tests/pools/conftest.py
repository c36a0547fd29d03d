"""Pool files as an administrator writes them: CSV (UTF-8, UTF-8 with BOM, GBK) and XLSX, headers in English
or Chinese."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import httpx

from tests.support.factories import random_uscc

API = "/api/v1"
EN = ["USCC", "name", "region", "industry", "tier", "notes"]
ZH = ["统一社会信用代码", "名称", "地区", "行业", "目标梯度", "备注"]
REGION = "500103"


def member(
    n: int, *, region: str = REGION, tier: str = "specialized_new", uscc: str | None = None
) -> list[Any]:
    code = uscc or random_uscc(region if len(region) == 6 else REGION)
    return [code, f"Pool Co {n}", region, "machinery", tier, f"note {n}"]


def csv_bytes(rows: Sequence[Sequence[Any]], *, header: Sequence[str] = EN, encoding: str = "utf-8") -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def xlsx_bytes(rows: Sequence[Sequence[Any]], *, header: Sequence[str] = EN) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def upload(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    content: bytes,
    *,
    filename: str = "pool.csv",
    program: str = "demo",
) -> httpx.Response:
    return await api.post(
        f"{API}/programs/{program}/pool-imports",
        headers=headers,
        files={"file": (filename, content, "application/octet-stream")},
    )


async def imported(
    api: httpx.AsyncClient, headers: dict[str, str], content: bytes, **kwargs: Any
) -> dict[str, Any]:
    """Upload, then the finished job (the API runs it once the request has committed)."""
    resp = await upload(api, headers, content, **kwargs)
    assert resp.status_code == 202, resp.text
    job = await api.get(f"{API}/pool-imports/{resp.json()['id']}", headers=headers)
    assert job.status_code == 200, job.text
    body: dict[str, Any] = job.json()
    assert body["status"] == "finished", body
    return body
