import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

from services.programs import (
    STANDARDS,
    IsoDuration,
    NoRulesetInForce,
    Program,
    ProgramFileError,
    load_program_file,
    load_programs,
)

PROGRAMS = Path(__file__).resolve().parents[2] / "programs"
DEMO = (PROGRAMS / "demo.toml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def programs() -> dict[str, Program]:
    return load_programs(PROGRAMS)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def demo_with(old: str, new: str) -> str:
    assert old in DEMO, old
    return DEMO.replace(old, new, 1)


# -- the real files ---------------------------------------------------------------------------------


def test_loads_the_three_programs(programs: dict[str, Program]) -> None:
    assert sorted(programs) == ["chongqing-2020", "demo", "national"]
    assert all(program.key == key for key, program in programs.items())
    assert all(program.currency == "CNY" and program.escalation_group for program in programs.values())


def test_national_program(programs: dict[str, Program]) -> None:
    national = programs["national"]
    assert national.authority.startswith("Ministry of Industry and Information Technology")
    assert list(national.tiers) == ["innovative", "specialized_new", "little_giant"]
    assert national.tiers["innovative"].review_levels == ["municipal", "provincial"]
    assert national.tiers["specialized_new"].review_levels == ["municipal", "provincial"]
    assert national.tiers["little_giant"].review_levels == ["municipal", "provincial", "national"]
    assert national.tiers["little_giant"].requires_tier == "specialized_new"
    assert national.durations.notice_period.timedelta == timedelta(days=7)
    assert national.bridge_pool is None
    assert national.listing_rewards == {}


@pytest.mark.parametrize(
    ("on", "version"),
    [
        (date(2022, 6, 1), "national-2022"),
        (date(2026, 3, 31), "national-2022"),
        (date(2026, 4, 1), "national-2026"),
        (date(2030, 1, 1), "national-2026"),
    ],
)
def test_ruleset_chosen_by_date(programs: dict[str, Program], on: date, version: str) -> None:
    assert programs["national"].ruleset_for(on) == version


def test_no_ruleset_before_the_first(programs: dict[str, Program]) -> None:
    with pytest.raises(NoRulesetInForce, match="2022-05-31"):
        programs["national"].ruleset_for(date(2022, 5, 31))


def test_ruleset_for_batch_uses_the_opening_date(programs: dict[str, Program]) -> None:
    national = programs["national"]
    assert national.ruleset_for_batch("2025") == "national-2022"
    assert national.ruleset_for_batch("2026") == "national-2026"
    with pytest.raises(KeyError):
        national.ruleset_for_batch("1999")


def test_chongqing_benefits(programs: dict[str, Program]) -> None:
    chongqing = programs["chongqing-2020"]
    assert chongqing.region_code == "500000"
    limits = {key: tier.credit_line_limit for key, tier in chongqing.tiers.items()}
    assert limits == {
        "specialized_new": Decimal("2000000.00"),
        "little_giant": Decimal("3000000.00"),
        "invisible_champion": Decimal("4000000.00"),
    }
    pool = chongqing.bridge_pool
    assert pool is not None
    assert pool.capacity == Decimal("3000000000.00")
    assert pool.per_use_cap == Decimal("80000000.00")
    assert pool.term_working_days == 15
    assert chongqing.listing_rewards == {
        "incubation": Decimal("30000.00"),
        "growth": Decimal("250000.00"),
        "specialized_new_board": Decimal("300000.00"),
    }
    assert [choice.version for choice in chongqing.rulesets] == ["national-2022", "national-2026"]
    assert chongqing.ruleset_for_batch("2025") == "national-2022"
    assert chongqing.ruleset_for_batch("2026") == "national-2026"
    invisible = chongqing.tiers["invisible_champion"]
    assert invisible.review_levels == ["municipal", "provincial"]
    assert invisible.requires_tier == "little_giant"


def test_demo_runs_in_seconds(programs: dict[str, Program]) -> None:
    demo = programs["demo"]
    durations = demo.durations
    assert durations.notice_period.timedelta == timedelta(seconds=20)
    assert durations.stage_sla.timedelta == timedelta(seconds=60)
    assert durations.supplement_deadline.timedelta == timedelta(seconds=60)
    assert durations.validity.timedelta == timedelta(seconds=300)
    assert durations.approval_deadline.timedelta == timedelta(seconds=120)
    assert list(demo.tiers) == ["specialized_new", "little_giant"]
    assert demo.tiers["little_giant"].credit_line_limit == Decimal("3000000.00")
    assert [batch.key for batch in demo.open_batches(date(2027, 6, 1))] == ["demo-2026"]
    assert demo.open_batches(date(2028, 1, 1)) == []
    assert demo.ruleset_for_batch("demo-2026") == "national-2026"
    assert durations.fraud_bar.timedelta == timedelta(seconds=600)


def test_programs_round_trip_through_json(programs: dict[str, Program]) -> None:
    for program in programs.values():
        data = program.model_dump(mode="json")
        assert data["durations"]["validity"] == str(program.durations.validity)
        assert isinstance(data["dual_approval_threshold"], str)
        assert Program.model_validate_json(program.model_dump_json()) == program


def test_programs_are_frozen(programs: dict[str, Program]) -> None:
    with pytest.raises(ValueError, match="frozen"):
        programs["demo"].key = "other"  # type: ignore[misc]


# -- durations --------------------------------------------------------------------------------------


def test_years_add_by_calendar() -> None:
    validity = IsoDuration.parse("P3Y")
    assert validity.iso == "P3Y"
    assert validity.timedelta == timedelta(days=3 * 365)
    assert validity.add_to(datetime(2024, 2, 29, 9, 30, tzinfo=UTC)) == datetime(
        2027, 2, 28, 9, 30, tzinfo=UTC
    )
    assert validity.add_to(date(2026, 5, 20)) == date(2029, 5, 20)


def test_months_and_times_add_by_calendar() -> None:
    duration = IsoDuration.parse("P1M2DT3H")
    assert duration.add_to(datetime(2026, 1, 31, tzinfo=UTC)) == datetime(2026, 3, 2, 3, tzinfo=UTC)
    assert duration.timedelta == timedelta(days=32, hours=3)


def test_seconds() -> None:
    duration = IsoDuration.parse("PT30S")
    assert duration.timedelta == timedelta(seconds=30)
    assert duration.add_to(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert str(duration) == "PT30S"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5D", "is not an ISO 8601 duration"),
        ("P", "is not an ISO 8601 duration"),
        ("P0D", "must be positive"),
        ("-P5D", "must be positive"),
        ("-P1Y", "must be positive"),
        ("P1.5Y", "whole numbers"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IsoDuration.parse(text)


def test_iso_duration_in_a_model() -> None:
    class Holder(BaseModel):
        duration: IsoDuration

    holder = Holder.model_validate({"duration": "P5D"})
    assert holder.duration.timedelta == timedelta(days=5)
    assert holder.model_dump_json() == '{"duration":"P5D"}'
    assert holder.model_dump() == {"duration": "P5D"}
    assert Holder.model_validate(holder.model_dump()).duration == holder.duration


# -- malformed files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ('notice_period = "PT20S"', 'notice_period = "20 seconds"', "durations.notice_period", "ISO 8601"),
        ('notice_period = "PT20S"', "notice_period = 20", "durations.notice_period", "ISO 8601 string"),
        ('validity = "PT300S"', 'validity = "PT0S"', "durations.validity", "must be positive"),
        (
            'credit_line_limit = "2000000.00"',
            "credit_line_limit = 2000000.00",
            "tiers.specialized_new.credit_line_limit",
            "not float 2000000.0",
        ),
        (
            'credit_line_limit = "2000000.00"',
            "credit_line_limit = 2000000",
            "tiers.specialized_new.credit_line_limit",
            "not int 2000000",
        ),
        (
            'credit_line_limit = "2000000.00"',
            'credit_line_limit = "two million"',
            "tiers.specialized_new.credit_line_limit",
            "Input should be a valid decimal",
        ),
        (
            'credit_line_limit = "2000000.00"',
            'credit_line_limit = "2000000.0"',
            "tiers.specialized_new.credit_line_limit",
            "exactly two decimals",
        ),
        (
            'credit_line_limit = "2000000.00"',
            'credit_line_limit = "0.00"',
            "tiers.specialized_new.credit_line_limit",
            "greater than 0",
        ),
        (
            'dual_approval_threshold = "1000000.00"',
            'dual_approval_threshold = "NaN"',
            "dual_approval_threshold",
            "",
        ),
        ("[tiers.little_giant]", "[tiers.big_giant]", "tiers.big_giant", "'little_giant'"),
        (
            'review_levels = ["municipal", "provincial"]',
            'review_levels = ["municipal", "county"]',
            "tiers.specialized_new.review_levels[1]",
            "'municipal', 'provincial' or 'national'",
        ),
        (
            'review_levels = ["municipal", "provincial"]',
            'review_levels = ["provincial", "municipal"]',
            "tiers.specialized_new.review_levels",
            "in the order municipal, provincial, national",
        ),
        (
            'review_levels = ["municipal", "provincial"]',
            "review_levels = []",
            "tiers.specialized_new.review_levels",
            "at least one review level",
        ),
        (
            'version = "national-2022"',
            'version = "national-2030"',
            "rulesets[0].version",
            "unknown ruleset 'national-2030'",
        ),
        ('region_code = "500000"', 'region_code = "5000"', "region_code", "exactly 6 digits"),
        ('escalation_group = "demo-backup-reviewers"\n', "", "escalation_group", "Field required"),
        ('key = "demo"', 'key = "demo"\ncolour = "blue"', "colour", "Extra inputs are not permitted"),
        (
            'requires_tier = "specialized_new"',
            'requires_tier = "little_giant"',
            "tiers.little_giant.requires_tier",
            "not a lower tier",
        ),
        ("opens_on = 2026-04-01", "opens_on = 2021-01-01", "batches[0].opens_on", "no ruleset is in force"),
        ("closes_on = 2027-12-31", "closes_on = 2025-12-31", "batches[0].closes_on", "before it opens"),
        (
            'per_use_cap = "80000000.00"',
            'per_use_cap = "180000000.00"',
            "bridge_pool.per_use_cap",
            "exceeds the pool capacity",
        ),
        (
            '\nqualifying_tiers = ["specialized_new", "little_giant"]',
            '\nqualifying_tiers = ["specialized_new", "invisible_champion"]',
            "bridge_pool.qualifying_tiers",
            "invisible_champion not among this program's tiers",
        ),
        (
            'listing_qualifying_tiers = ["specialized_new", "little_giant"]',
            'listing_qualifying_tiers = ["single_champion"]',
            "listing_qualifying_tiers",
            "not among this program's tiers",
        ),
    ],
)
def test_malformed_file_names_file_and_field(
    tmp_path: Path, old: str, new: str, field: str, message: str
) -> None:
    path = write(tmp_path, "demo.toml", demo_with(old, new))
    with pytest.raises(ProgramFileError) as raised:
        load_programs(tmp_path)
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {field}"), text
    assert message in text


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.toml", demo_with('key = "demo"', 'key = "demo'))
    with pytest.raises(ProgramFileError) as raised:
        load_program_file(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: TOML syntax error: ")
    assert "line 3" in text
    assert "\n" not in text


def test_duplicate_program_keys(tmp_path: Path) -> None:
    first = write(tmp_path, "a.toml", DEMO)
    second = write(tmp_path, "b.toml", DEMO)
    with pytest.raises(ProgramFileError) as raised:
        load_programs(tmp_path)
    assert str(raised.value) == f"{second}: key: duplicate program key 'demo' (also in {first})"


def test_several_errors_stay_on_one_line(tmp_path: Path) -> None:
    text = demo_with('notice_period = "PT20S"', 'notice_period = "soon"').replace(
        'region_code = "500000"', 'region_code = "50"'
    )
    write(tmp_path, "demo.toml", text)
    with pytest.raises(ProgramFileError) as raised:
        load_programs(tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert "region_code: " in message
    assert "durations.notice_period: " in message


def test_only_toml_files_are_read(tmp_path: Path) -> None:
    write(tmp_path, "demo.toml", DEMO)
    write(tmp_path, "notes.txt", "not a program")
    assert list(load_programs(tmp_path)) == ["demo"]


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ProgramFileError, match=r"no \*\.toml program files"):
        load_programs(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ProgramFileError, match="not a directory"):
        load_programs(tmp_path / "absent")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_bytes(b'key = "\xff"\n')
    with pytest.raises(ProgramFileError, match=r"demo\.toml: not UTF-8 text"):
        load_programs(tmp_path)


def test_program_file_error_is_a_value_error() -> None:
    assert issubclass(ProgramFileError, ValueError)


# -- rulesets by batch ------------------------------------------------------------------------------


def test_every_shipped_batch_is_judged_by_the_standard_in_force_when_it_opens(
    programs: dict[str, Program],
) -> None:
    for program in programs.values():
        for batch in program.batches:
            version = program.ruleset_for_batch(batch.key)
            assert STANDARDS[version].in_force(batch.opens_on), (program.key, batch.key, version)
            expected = "national-2026" if batch.opens_on >= date(2026, 4, 1) else "national-2022"
            assert version == expected, (program.key, batch.key)


def test_standards_replace_each_other_on_2026_04_01() -> None:
    assert STANDARDS["national-2022"].in_force(date(2026, 3, 31))
    assert not STANDARDS["national-2022"].in_force(date(2026, 4, 1))
    assert not STANDARDS["national-2026"].in_force(date(2026, 3, 31))
    assert STANDARDS["national-2026"].in_force(date(2026, 4, 1))


ONLY_2022 = """[[rulesets]]
version = "national-2022"
effective_from = 2022-06-01
"""


def demo_rulesets(rulesets: str, opens_on: str) -> str:
    """The demo program with only ``rulesets`` and its batch opening on ``opens_on``."""
    text = DEMO.replace("opens_on = 2026-04-01", f"opens_on = {opens_on}", 1)
    start = text.index("[[rulesets]]")
    end = text.index("[[batches]]")
    return text[:start] + rulesets + "\n" + text[end:]


@pytest.mark.parametrize(
    ("rulesets", "opens_on", "message"),
    [
        # A batch opening once the 2026 standard is in force, with no 2026 ruleset: refused.
        (
            ONLY_2022,
            "2026-04-01",
            "batches[0].opens_on: batch 'demo-2026' opens on 2026-04-01 and would be judged by "
            "national-2022, whose standard is not in force that day; "
            "add a [[rulesets]] entry for national-2026",
        ),
        # The 2026 standard adopted before it is in force: a batch opening then is refused too.
        (
            ONLY_2022 + '\n[[rulesets]]\nversion = "national-2026"\neffective_from = 2026-01-01\n',
            "2026-02-01",
            "would be judged by national-2026, whose standard is not in force that day; add a [[rulesets]] "
            "entry for national-2022",
        ),
        # Adopted late: a batch opening after 2026-04-01 but before the program's 2026 ruleset.
        (
            ONLY_2022 + '\n[[rulesets]]\nversion = "national-2026"\neffective_from = 2026-06-01\n',
            "2026-05-01",
            "would be judged by national-2022, whose standard is not in force that day",
        ),
    ],
)
def test_a_batch_judged_by_a_standard_not_in_force_is_refused(
    tmp_path: Path, rulesets: str, opens_on: str, message: str
) -> None:
    write(tmp_path, "demo.toml", demo_rulesets(rulesets, opens_on))
    with pytest.raises(ProgramFileError, match=re.escape(message)):
        load_programs(tmp_path)


@pytest.mark.parametrize(
    ("opens_on", "version"), [("2026-03-31", "national-2022"), ("2026-04-01", "national-2026")]
)
def test_a_batch_is_judged_by_the_ruleset_in_force_when_it_opens(
    tmp_path: Path, opens_on: str, version: str
) -> None:
    write(tmp_path, "demo.toml", DEMO.replace("opens_on = 2026-04-01", f"opens_on = {opens_on}", 1))
    demo = load_programs(tmp_path)["demo"]
    assert demo.ruleset_for_batch("demo-2026") == version
    # ... whatever the date an application is filed on (the batch is open to the end of 2027).
    assert demo.ruleset_for(date(2027, 12, 31)) == "national-2026"


def test_fraud_bar_defaults_to_three_years(tmp_path: Path) -> None:
    assert 'fraud_bar = "PT600S"' in DEMO
    write(tmp_path, "demo.toml", demo_with('fraud_bar = "PT600S"', ""))
    bar = load_programs(tmp_path)["demo"].durations.fraud_bar
    assert str(bar) == "P3Y"
    assert bar.add_to(datetime(2026, 12, 1, 10, tzinfo=UTC)) == datetime(2029, 12, 1, 10, tzinfo=UTC)
    write(tmp_path, "demo.toml", demo_with('fraud_bar = "PT600S"', 'fraud_bar = "three years"'))
    with pytest.raises(ProgramFileError, match=r"durations\.fraud_bar"):
        load_programs(tmp_path)
