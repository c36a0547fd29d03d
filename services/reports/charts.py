"""The report's charts, drawn on the server: horizontal bar charts with one or two series, as SVG text (the
console embeds it) or as a reportlab ``Drawing`` (the PDF) - one layout for both.

The charts: the funnel (every tier together, step by step), recognitions by province (through review, and
imported from ministry lists when there are any), and the cultivation plan (planned against achieved per tier
and year)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from services.reports.schemas import Report

WIDTH = 560.0
LABEL_WIDTH = 170.0
BAR_HEIGHT = 14.0
GAP = 8.0
TOP = 28.0
LEGEND = 18.0
COLOURS = ("#2b6cb0", "#dd6b20")
FUNNEL_STEPS = (
    ("applied", "Applied"),
    ("screened_in", "Screened in"),
    ("passed_municipal", "Passed municipal"),
    ("passed_provincial", "Passed provincial"),
    ("passed_national", "Passed national"),
    ("on_notice", "On public notice"),
    ("recognized", "Recognised"),
)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: list[float]


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    labels: list[str]
    series: list[Series]

    @property
    def height(self) -> float:
        per_row = BAR_HEIGHT * len(self.series) + GAP
        return TOP + per_row * max(1, len(self.labels)) + (LEGEND if len(self.series) > 1 else 0) + GAP

    @property
    def top_value(self) -> float:
        return max((value for series in self.series for value in series.values), default=0.0)

    def bars(self) -> list[tuple[int, int, float, float, float]]:
        """(label index, series index, y, length, value) of every bar."""
        scale = (WIDTH - LABEL_WIDTH - 50) / self.top_value if self.top_value else 0.0
        per_row = BAR_HEIGHT * len(self.series) + GAP
        result = []
        for row in range(len(self.labels)):
            for index, series in enumerate(self.series):
                value = series.values[row]
                y = TOP + row * per_row + index * BAR_HEIGHT
                result.append((row, index, y, value * scale, value))
        return result


def charts(report: Report) -> list[Chart]:
    """The charts the report's sections allow (none for a section the caller may not read)."""
    result = []
    if report.funnel is not None:
        steps = [
            (key, label)
            for key, label in FUNNEL_STEPS
            if any(getattr(r, key) is not None for r in report.funnel)
        ]
        values = [float(sum(getattr(row, key) or 0 for row in report.funnel)) for key, _ in steps]
        result.append(
            Chart(
                "funnel",
                "Funnel (every tier)",
                [label for _, label in steps],
                [Series("applications", values)],
            )
        )
    if report.by_region is not None:
        provinces: dict[str, tuple[int, int]] = {}
        for row in report.by_region:
            reviewed, imported = provinces.get(row.province, (0, 0))
            provinces[row.province] = (reviewed + row.recognized, imported + row.imported)
        top = sorted(provinces.items(), key=lambda item: (-sum(item[1]), item[0]))[:15]
        series = [Series("reviewed", [float(counts[0]) for _, counts in top])]
        if any(counts[1] for _, counts in top):  # a second bar only where lists were imported
            series.append(Series("imported", [float(counts[1]) for _, counts in top]))
        result.append(Chart("by_region", "Recognitions by province", [code for code, _ in top], series))
    if report.plan is not None:
        result.append(
            Chart(
                "plan",
                "Cultivation plan: planned and achieved",
                [f"{row.tier} {row.year}" for row in report.plan],
                [
                    Series("planned", [float(row.planned or 0) for row in report.plan]),
                    Series("achieved", [float(row.achieved) for row in report.plan]),
                ],
            )
        )
    return result


def _number(value: float) -> str:
    return f"{value:,.0f}"


def to_svg(chart: Chart) -> str:
    """The chart as a standalone SVG element (every text escaped), with a title for screen readers."""
    height = chart.height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH:.0f} {height:.0f}" '
        f'width="{WIDTH:.0f}" height="{height:.0f}" role="img" aria-labelledby="chart-{chart.key}-title" '
        f'class="chart" font-family="sans-serif" font-size="11">',
        f'<title id="chart-{chart.key}-title">{escape(chart.title)}</title>',
        f'<text x="0" y="16" font-size="13" font-weight="bold">{escape(chart.title)}</text>',
    ]
    for row, index, y, length, value in chart.bars():
        if index == 0:
            label_y = y + BAR_HEIGHT * len(chart.series) / 2 + 4
            parts.append(
                f'<text x="{LABEL_WIDTH - 6:.0f}" y="{label_y:.1f}" text-anchor="end">'
                f"{escape(chart.labels[row])}</text>"
            )
        parts.append(
            f'<rect x="{LABEL_WIDTH:.0f}" y="{y:.1f}" width="{length:.1f}" height="{BAR_HEIGHT - 2:.0f}" '
            f'fill="{COLOURS[index % 2]}"><title>{escape(chart.series[index].name)}: '
            f"{_number(value)}</title></rect>"
        )
        parts.append(
            f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{y + BAR_HEIGHT - 4:.1f}">{_number(value)}</text>'
        )
    if len(chart.series) > 1:
        y = height - LEGEND
        for index, series in enumerate(chart.series):
            x = LABEL_WIDTH + index * 110
            parts.append(
                f'<rect x="{x:.0f}" y="{y:.0f}" width="10" height="10" fill="{COLOURS[index % 2]}"/>'
            )
            parts.append(f'<text x="{x + 14:.0f}" y="{y + 9:.0f}">{escape(series.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_drawing(chart: Chart, font: str) -> Any:
    """The chart as a reportlab ``Drawing`` (the PDF's), laid out as ``to_svg`` lays it out."""
    from reportlab.graphics.shapes import Drawing, Rect, String
    from reportlab.lib.colors import HexColor

    height = chart.height
    drawing = Drawing(WIDTH, height)

    def flip(y: float) -> float:  # SVG counts y down from the top, reportlab up from the bottom
        return height - y

    drawing.add(String(0, flip(16), chart.title, fontName=font, fontSize=12))
    for row, index, y, length, value in chart.bars():
        if index == 0:
            label_y = y + BAR_HEIGHT * len(chart.series) / 2 + 4
            drawing.add(
                String(
                    LABEL_WIDTH - 6,
                    flip(label_y),
                    chart.labels[row],
                    fontName=font,
                    fontSize=9,
                    textAnchor="end",
                )
            )
        colour = HexColor(COLOURS[index % 2])
        drawing.add(
            Rect(
                LABEL_WIDTH,
                flip(y + BAR_HEIGHT - 2),
                max(length, 0.01),
                BAR_HEIGHT - 2,
                fillColor=colour,
                strokeColor=None,
            )
        )
        drawing.add(
            String(
                LABEL_WIDTH + length + 4, flip(y + BAR_HEIGHT - 4), _number(value), fontName=font, fontSize=9
            )
        )
    if len(chart.series) > 1:
        y = height - LEGEND
        for index, series in enumerate(chart.series):
            x = LABEL_WIDTH + index * 110
            drawing.add(
                Rect(x, flip(y + 10), 10, 10, fillColor=HexColor(COLOURS[index % 2]), strokeColor=None)
            )
            drawing.add(String(x + 14, flip(y + 9), series.name, fontName=font, fontSize=9))
    return drawing
