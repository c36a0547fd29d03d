"""The checks of one pool row, pure: each problem is a ``Refusal`` (line, field, reason); a row with one is
refused whole. Duplicates are a property of the file: every occurrence of a USCC after the first is refused,
naming the first one's line."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ConfigDict

from services.identifiers import InvalidRegionCode, InvalidUSCC, validate_region_code, validate_uscc
from services.pools.models import MemberValues
from services.programs import Program
from services.vocabulary import covers_region

__all__ = ["FORMULA_START", "LIMITS", "Member", "Refusal", "RowChecker", "csv_safe"]

LIMITS = {"name": 200, "industry": 100, "notes": 1000, "tier": 64}

# Chinese names of the tiers an administrator may write instead of the key (../shared/DOMAIN.md).
TIER_NAMES = {
    "创新型中小企业": "innovative",
    "科技型创新型中小企业": "innovative",
    "专精特新中小企业": "specialized_new",
    "专精特新": "specialized_new",
    '专精特新"小巨人"': "little_giant",
    "专精特新“小巨人”": "little_giant",
    "专精特新小巨人": "little_giant",
    "小巨人": "little_giant",
    "隐形冠军": "invisible_champion",
    "制造业单项冠军": "single_champion",
    "单项冠军": "single_champion",
}

NATIONWIDE_PROGRAM = frozenset({"000000", "100000"})

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP "CSV injection")."""


def csv_safe(text: str) -> str:
    """``text`` for a CSV a spreadsheet will open: a leading ``= + - @``, tab or CR is quoted with ``'``."""
    return "'" + text if text.startswith(FORMULA_START) else text


@dataclass(frozen=True, slots=True)
class Refusal:
    line: int
    field: str
    reason: str
    value: str = ""


class Member(MemberValues):
    """A row that passed every check, as it is stored."""

    model_config = ConfigDict(frozen=True)

    line: int


class RowChecker:
    """Checks the rows of one file in order, against one program: keeps the first line of each USCC."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.tiers = {str(t): str(t) for t in program.tiers}
        self.tiers.update({str(p.name).strip(): str(t) for t, p in program.tiers.items()})
        self.tiers.update({k: v for k, v in TIER_NAMES.items() if v in program.tiers})
        self.first_line: dict[str, int] = {}
        # A national program's region is written 100000 (or 000000): every region is inside it.
        self.nationwide = program.region_code in NATIONWIDE_PROGRAM

    def remember(self, line: int, cells: tuple[str, ...]) -> None:
        """Count a row already processed (a job resumed after a restart) for the duplicate rule only."""
        self.first_line.setdefault(cells[0].strip(), line)

    def check(self, line: int, cells: tuple[str, ...]) -> Member | list[Refusal]:
        uscc, name, region, industry, tier, notes = (c.strip() for c in cells)
        refusals: list[Refusal] = []

        def refuse(field: str, reason: str, value: str) -> None:
            refusals.append(Refusal(line, field, reason, value[:200]))

        for field, value in (("uscc", uscc), ("name", name), ("region", region), ("industry", industry),
                             ("tier", tier), ("notes", notes)):  # fmt: skip
            if value.startswith("="):
                refuse(field, "a formula is never evaluated: write the value itself", value)
            elif field in LIMITS and len(value) > LIMITS[field]:
                refuse(field, f"at most {LIMITS[field]} characters", value)
            elif not value and field != "notes":
                refuse(field, "required", value)
            elif any(ord(c) < 32 and c not in "\t\n" for c in value):
                refuse(field, "control characters are not allowed", value)
        bad = {r.field for r in refusals}
        if "uscc" not in bad:
            try:
                validate_uscc(uscc)
            except InvalidUSCC as exc:
                refuse("uscc", str(exc), uscc)
            first = self.first_line.setdefault(uscc, line)
            if first != line:
                refuse("uscc", f"duplicate: this USCC is already on line {first}", uscc)
        if "region" not in bad:
            try:
                validate_region_code(region)
            except InvalidRegionCode as exc:
                refuse("region", str(exc), region)
            else:
                if not self.nationwide and not covers_region(self.program.region_code, region):
                    refuse(
                        "region",
                        f"outside the program's region {self.program.region_code}",
                        region,
                    )
        if "tier" not in bad:
            key = self.tiers.get(tier) or self.tiers.get(tier.lower())
            if key is None:
                offered = ", ".join(sorted(str(t) for t in self.program.tiers))
                refuse("tier", f"not a tier of program {self.program.key}: one of {offered}", tier)
            else:
                tier = key
        if refusals:
            return refusals
        # Checked here, field by field: built without validating again (a pool file has up to 50,000 rows).
        return Member.model_construct(
            line=line,
            uscc=uscc,
            name=name,
            region_code=region,
            industry=industry,
            tier_aimed=tier,
            notes=notes or None,
        )
