"""The ``[[plan]]`` of a program file: validated with the rest of the file, one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.programs import ProgramFileError, load_program_file, load_programs

PROGRAMS = Path(__file__).resolve().parents[2] / "programs"


def test_the_seed_programs_carry_their_plans() -> None:
    programs = load_programs(PROGRAMS)
    chongqing = {(line.year, line.tier): line.target for line in programs["chongqing-2020"].plan}
    assert chongqing[(2026, "little_giant")] == 30
    assert chongqing[(2025, "specialized_new")] == 259
    assert len(chongqing) == 9
    assert programs["national"].plan == []  # optional


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            'year = 2026\ntier = "single_champion"\ntarget = 3',
            "plan: single_champion not among this program's tiers",
        ),
        (
            'year = 2026\ntier = "little_giant"\ntarget = -1',
            "plan[4].target: Input should be greater than or equal to 0",
        ),
        (
            'year = 1999\ntier = "little_giant"\ntarget = 1',
            "plan[4].year: Input should be greater than or equal to 2000",
        ),
        ('year = 2026\ntier = "little_giant"\ntarget = 3', "plan: a (year, tier) is planned twice"),
        (
            'year = 2026\ntier = "little_giant"\ntarget = "3"',
            "plan[4].target: Input should be a valid integer",
        ),
    ],
)
def test_a_bad_plan_is_refused(tmp_path: Path, plan: str, message: str) -> None:
    demo = (PROGRAMS / "demo.toml").read_text()  # plans four lines: the one added is plan[4]
    path = tmp_path / "demo.toml"
    path.write_text(demo + f"\n[[plan]]\n{plan}\n")
    with pytest.raises(ProgramFileError) as refused:
        load_program_file(path)
    assert message in str(refused.value)
