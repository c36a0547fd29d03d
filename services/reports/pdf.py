"""The printable report: A4 pages with what the figures cover, the charts, then every section as a table
(titles in English and Chinese).

Text - Chinese program names, industries - is set in reportlab's built-in CID font ``STSong-Light``, as the
certificates are (services/applications/certificates.py: PDF readers supply it, nothing is embedded).
reportlab is imported on first use, as there."""

from __future__ import annotations

import io

from services.reports.charts import charts, to_drawing
from services.reports.exports import meta, tables
from services.reports.schemas import Report

CJK_FONT = "STSong-Light"


def to_pdf(report: Report) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
    from reportlab.platypus.flowables import Flowable

    pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))
    title = ParagraphStyle("title", fontName=CJK_FONT, fontSize=16, leading=22, spaceAfter=6)
    heading = ParagraphStyle(
        "heading", fontName=CJK_FONT, fontSize=12, leading=16, spaceBefore=10, spaceAfter=4
    )
    body = ParagraphStyle("body", fontName=CJK_FONT, fontSize=9, leading=12)

    def text(value: object) -> str:
        from xml.sax.saxutils import escape

        return escape("" if value is None else str(value))

    story: list[Flowable] = [
        Paragraph(text(f"{report.program_name} - cohort report / 培育工作报告"), title),
        Paragraph("<br/>".join(f"{text(name)}: {text(value)}" for name, value in meta(report)), body),
        Spacer(1, 4 * mm),
    ]
    for chart in charts(report):
        story += [to_drawing(chart, CJK_FONT), Spacer(1, 3 * mm)]
    for table in tables(report):
        story.append(Paragraph(text(f"{table.title} / {table.title_zh}"), heading))
        data = [[text(name) for name in table.columns]]
        data += [[text(cell) for cell in row] for row in table.rows] or [
            ["-"] + [""] * (len(table.columns) - 1)
        ]
        grid = Table(data, repeatRows=1, hAlign="LEFT")
        grid.setStyle(
            TableStyle(
                [
                    ("FONTNAME", (0, 0), (-1, -1), CJK_FONT),
                    ("FONTSIZE", (0, 0), (-1, -1), 7),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e2e8f0")),
                    ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#a0aec0")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        story.append(grid)
    out = io.BytesIO()
    document = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=f"{report.program} report",
        invariant=1,
    )
    document.build(story)
    return out.getvalue()
