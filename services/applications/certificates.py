"""A recognition's certificate as a PDF, in Chinese and English: the enterprise, its USCC, the tier (its
Chinese name and the program's English one), the certificate number, the validity and the issuing program,
with a QR code and a link to the public verification URL.

The document depends on nothing but what it shows: reportlab's ``invariant`` mode fixes the creation date
and document id, so the same recognition always renders to the same bytes and its SHA-256 is a strong ETag.
Chinese text uses reportlab's built-in CID font ``STSong-Light`` (Adobe-GB1), which PDF readers supply, so no
font file is bundled or embedded.

reportlab is imported on first use: it costs the API process about 16 MiB and 0.1 s that it need not pay
at start-up, when most never render a certificate."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

# The tiers' names in Chinese policy texts (../shared/DOMAIN.md "Tiers").
TIER_NAMES_ZH: dict[str, str] = {
    "innovative": "创新型中小企业",
    "specialized_new": "专精特新中小企业",
    "little_giant": "专精特新“小巨人”企业",
    "invisible_champion": "隐形冠军企业",
    "single_champion": "制造业单项冠军企业",
}
# Dates are printed as they read in China (UTC+8 all year, no daylight saving time).
CHINA = timezone(timedelta(hours=8), "CST")
CJK_FONT = "STSong-Light"
LATIN_FONT = "Helvetica"
LATIN_BOLD = "Helvetica-Bold"


@dataclass(frozen=True)
class CertificateData:
    """What a certificate shows."""

    certificate_no: str
    enterprise_name: str
    uscc: str
    tier: str  # a key of TIER_NAMES_ZH
    tier_name: str  # the program's English name of the tier
    valid_from: datetime
    valid_until: datetime
    program_name: str
    authority: str
    verify_url: str


@dataclass(frozen=True)
class Certificate:
    """A rendered certificate: the PDF, its SHA-256 (hex) and the name to save it under."""

    pdf: bytes
    sha256: str
    filename: str


def issue(data: CertificateData) -> Certificate:
    pdf = render(data)
    return Certificate(pdf=pdf, sha256=hashlib.sha256(pdf).hexdigest(), filename=f"{data.certificate_no}.pdf")


def china_date(at: datetime) -> str:
    """``YYYY-MM-DD`` of the instant in China."""
    return at.astimezone(CHINA).date().isoformat()


def render(data: CertificateData) -> bytes:
    """The certificate's PDF (one landscape A4 page); the same data gives the same bytes."""
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.pdfgen.canvas import Canvas

    _register_fonts()
    buffer = io.BytesIO()
    width, height = landscape(A4)
    canvas = Canvas(buffer, pagesize=(width, height), invariant=1, pageCompression=1)
    canvas.setTitle(f"认定证书 Certificate of Recognition {data.certificate_no}")
    canvas.setAuthor(data.authority)
    canvas.setSubject(data.program_name)
    canvas.setCreator("giantflow")
    _Page(canvas, width, height).draw(data)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


@cache
def _register_fonts() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))


class _Page:
    """The layout: a framed page, the title, the statement, the fields (Chinese label, English label, value)
    and the QR code with its link in the lower right corner."""

    MARGIN = 36.0
    LABEL_X = 90.0
    VALUE_X = 330.0
    QR_SIZE = 118.0

    def __init__(self, canvas: Any, width: float, height: float) -> None:
        self.c, self.width, self.height = canvas, width, height

    def draw(self, data: CertificateData) -> None:
        c, w, h = self.c, self.width, self.height
        c.setStrokeColorRGB(0.62, 0.12, 0.12)
        c.setLineWidth(3)
        c.rect(self.MARGIN, self.MARGIN, w - 2 * self.MARGIN, h - 2 * self.MARGIN)
        c.setLineWidth(0.8)
        c.rect(self.MARGIN + 6, self.MARGIN + 6, w - 2 * self.MARGIN - 12, h - 2 * self.MARGIN - 12)
        c.setFillColorRGB(0.62, 0.12, 0.12)
        c.setFont(CJK_FONT, 30)
        c.drawCentredString(w / 2, h - 100, "认定证书")
        c.setFont(LATIN_BOLD, 17)
        c.drawCentredString(w / 2, h - 126, "Certificate of Recognition")
        c.setFillColorRGB(0, 0, 0)
        tier_zh = TIER_NAMES_ZH.get(data.tier, data.tier)
        c.setFont(CJK_FONT, 12)
        c.drawCentredString(w / 2, h - 158, f"经审核，下列企业被认定为{tier_zh}，特发此证。")
        c.setFont(LATIN_FONT, 10.5)
        c.drawCentredString(
            w / 2, h - 174, f"This certifies that the enterprise below is recognised as: {data.tier_name}."
        )
        valid_from, valid_until = china_date(data.valid_from), china_date(data.valid_until)
        y = h - 210
        fields = [
            ("企业名称", "Enterprise", [data.enterprise_name]),
            ("统一社会信用代码", "Unified Social Credit Code", [data.uscc]),
            ("认定类别", "Tier", [tier_zh, data.tier_name]),
            ("证书编号", "Certificate No.", [data.certificate_no]),
            ("有效期", "Valid", [f"{valid_from} 至 {valid_until}", f"from {valid_from} until {valid_until}"]),
            ("发证项目", "Issuing program", [data.program_name, data.authority]),
        ]
        value_width = w - self.VALUE_X - self.MARGIN - self.QR_SIZE - 40
        for label_zh, label_en, values in fields:
            y = self._field(y, label_zh, label_en, values, value_width)
        self._qr(data.verify_url)

    def _field(self, y: float, label_zh: str, label_en: str, values: list[str], width: float) -> float:
        c = self.c
        c.setFont(CJK_FONT, 12)
        c.drawString(self.LABEL_X, y, label_zh)
        c.setFont(LATIN_FONT, 9)
        c.drawString(self.LABEL_X, y - 12, label_en)
        line_y = y
        for value in values:
            font = LATIN_FONT if value.isascii() else CJK_FONT  # Latin text reads better in Latin type
            c.setFont(font, 12)
            for line in _wrap(value, font, 12, width):
                c.drawString(self.VALUE_X, line_y, line)
                line_y -= 15
        return min(y - 12, line_y + 15) - 20

    def _qr(self, url: str) -> None:
        from reportlab.graphics import renderPDF
        from reportlab.graphics.barcode.qr import QrCodeWidget
        from reportlab.graphics.shapes import Drawing

        c, size = self.c, self.QR_SIZE
        x, y = self.width - self.MARGIN - 56 - size, self.MARGIN + 44
        widget = QrCodeWidget(url, barLevel="M")
        left, bottom, right, top = widget.getBounds()
        drawing = Drawing(size, size, transform=[size / (right - left), 0, 0, size / (top - bottom), 0, 0])
        drawing.add(widget)
        renderPDF.draw(drawing, c, x, y)
        c.linkURL(url, (x, y, x + size, y + size), relative=0, thickness=0)
        c.setFont(CJK_FONT, 9)
        c.drawCentredString(x + size / 2, y - 10, "扫码核验  Scan to verify")
        c.setFont(LATIN_FONT, 6.5)
        text_width = size + 48
        line_y = y - 22
        lines = _wrap(url, LATIN_FONT, 6.5, text_width)
        for line in lines:
            c.drawCentredString(x + size / 2, line_y, line)
            line_y -= 8
        # The printed address links too (what a test, or a reader without a camera, follows).
        c.linkURL(url, (x - 30, line_y + 4, x + size + 30, y - 16), relative=0, thickness=0)


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """`text` in lines no wider than `width`, broken between characters (Chinese has no spaces to break at;
    a long name or address breaks anywhere rather than run off the page)."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    lines, line = [], ""
    for char in text:
        if line and stringWidth(line + char, font, size) > width:
            lines.append(line)
            line = ""
        line += char
    lines.append(line)
    return lines
