import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.identifiers import (
    CHARSET,
    InvalidRegionCode,
    InvalidUSCC,
    check_character,
    make_uscc,
    region_of,
    validate_region_code,
    validate_uscc,
)

REAL = "91350100M000100Y43"  # published on a business licence (Fuzhou, 350100)
GB_32100_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def reference_check(prefix17: str) -> str:
    """The check character computed straight from the standard's weight table."""
    total = sum(CHARSET.index(char) * weight for char, weight in zip(prefix17, GB_32100_WEIGHTS, strict=True))
    return CHARSET[(31 - total % 31) % 31]


def test_real_code_is_valid() -> None:
    assert validate_uscc(REAL) == REAL


def test_region_of_real_code() -> None:
    assert region_of(REAL) == "350100"


def test_make_uscc_reproduces_real_code() -> None:
    assert make_uscc(REAL[:17]) == REAL


def test_charset_excludes_i_o_s_v_z() -> None:
    assert len(CHARSET) == 31
    assert not set("IOSVZ") & set(CHARSET)


def test_check_value_31_maps_to_zero() -> None:
    # Find a prefix whose weighted sum is a multiple of 31: its check character must be "0".
    for last in CHARSET:
        prefix = "9150010000000000" + last
        if reference_check(prefix) == "0":
            assert check_character(prefix) == "0"
            assert validate_uscc(prefix + "0")
            return
    pytest.fail("no prefix with check value 0 among the candidates")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("", "must have 18 characters, got 0"),
        (REAL[:17], "must have 18 characters, got 17"),
        (REAL + "0", "must have 18 characters, got 19"),
        ("91350100m000100Y43", "character 9 is 'm': lower case is not allowed"),
        ("91350100M000100y43", "character 16 is 'y': lower case is not allowed"),
        ("9135 100M000100Y43", "character 5 is a space"),
        ("91350100M000100Y4 ", "character 18 is a space"),
        ("91350100I000100Y43", "character 9 is 'I': the letters I, O, S, V and Z are never used"),
        ("91350100O000100Y43", "character 9 is 'O'"),
        ("91350100S000100Y43", "character 9 is 'S'"),
        ("91350100V000100Y43", "character 9 is 'V'"),
        ("91350100Z000100Y43", "character 9 is 'Z'"),
        ("91350100-000100Y43", "character 9 is '-': only digits and the letters"),
        ("91350100M000100Y44", "check character (position 18) is '4', expected '3'"),
        (
            "91A50100M000100Y43",
            "characters 3-8 must be the 6-digit administrative division code, got 'A50100'",
        ),
    ],
)
def test_invalid_codes_say_why(code: str, message: str) -> None:
    with pytest.raises(InvalidUSCC) as raised:
        validate_uscc(code)
    assert message in str(raised.value)


def test_invalid_uscc_is_a_value_error() -> None:
    assert issubclass(InvalidUSCC, ValueError)


@pytest.mark.parametrize("prefix", ["", REAL[:16], REAL, "91350100m000100Y4"])
def test_make_uscc_rejects_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidUSCC):
        make_uscc(prefix)


prefixes = st.builds(
    lambda head, region, body: head + region + body,
    st.text(alphabet=CHARSET, min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=6, max_size=6),
    st.text(alphabet=CHARSET, min_size=9, max_size=9),
)


@settings(max_examples=200, deadline=None)
@given(prefix=prefixes)
def test_make_uscc_matches_the_standard_weights(prefix: str) -> None:
    code = make_uscc(prefix)
    assert code[-1] == reference_check(prefix)
    assert validate_uscc(code) == code
    assert region_of(code) == prefix[2:8]


@settings(max_examples=200, deadline=None)
@given(prefix=prefixes, position=st.integers(0, 16), replacement=st.sampled_from(CHARSET))
def test_any_single_substitution_is_caught(prefix: str, position: int, replacement: str) -> None:
    code = make_uscc(prefix)
    if replacement == code[position] or (2 <= position < 8 and not replacement.isdigit()):
        return
    with pytest.raises(InvalidUSCC, match="check character"):
        validate_uscc(code[:position] + replacement + code[position + 1 :])


@pytest.mark.parametrize("code", ["500000", "350100", "110101", "100000"])
def test_region_codes_accepted(code: str) -> None:
    assert validate_region_code(code) == code


FULL_WIDTH_500000 = "\uff15\uff10\uff10\uff10\uff10\uff10"


@pytest.mark.parametrize("code", ["", "50000", "5000000", "50000a", " 500000", "50 000", FULL_WIDTH_500000])
def test_region_codes_rejected(code: str) -> None:
    with pytest.raises(InvalidRegionCode, match="exactly 6 digits"):
        validate_region_code(code)
