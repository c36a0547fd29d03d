"""Unified Social Credit Code (统一社会信用代码, GB 32100-2015), region codes (GB/T 2260), e-mail addresses.

A code has 18 characters from ``0-9A-HJ-NP-RTUWXY`` (no I, O, S, V, Z). Positions 3-8 are the
registering authority's 6-digit administrative division code; position 18 is a check character:
weights ``3^(i-1) mod 31`` over positions 1-17, check value ``31 - (sum mod 31)``, 31 maps to 0.
"""

from __future__ import annotations

import re

__all__ = [
    "CHARSET",
    "InvalidEmail",
    "InvalidRegionCode",
    "InvalidUSCC",
    "check_character",
    "make_uscc",
    "region_of",
    "validate_email",
    "validate_region_code",
    "validate_uscc",
]

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUES = {char: value for value, char in enumerate(CHARSET)}
_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
_EXCLUDED = frozenset("IOSVZ")
_LENGTH = 18


class InvalidUSCC(ValueError):
    """The text is not a valid Unified Social Credit Code; the message says why."""


class InvalidRegionCode(ValueError):
    """The text is not a 6-digit administrative division code."""


def _describe(char: str) -> str:
    if char == " ":
        return "a space"
    if char.isspace():
        return f"whitespace {char!r}"
    return repr(char)


def _check_characters(text: str, *, what: str) -> None:
    for position, char in enumerate(text, start=1):
        if char in _VALUES:
            continue
        if char.upper() in _VALUES:
            reason = "lower case is not allowed; write it in upper case"
        elif char.upper() in _EXCLUDED:
            reason = "the letters I, O, S, V and Z are never used"
        else:
            reason = "only digits and the letters A-H, J-N, P-R, T, U, W, X, Y are allowed"
        raise InvalidUSCC(f"{what}: character {position} is {_describe(char)}: {reason}")


def _check_region(text: str, *, what: str) -> None:
    region = text[2:8]
    if not (region.isascii() and region.isdigit()):
        raise InvalidUSCC(
            f"{what}: characters 3-8 must be the 6-digit administrative division code, got {region!r}"
        )


def check_character(prefix17: str) -> str:
    """The check character for the first 17 characters (which must already be valid)."""
    total = sum(_VALUES[char] * weight for char, weight in zip(prefix17, _WEIGHTS, strict=True))
    return CHARSET[(31 - total % 31) % 31]


def validate_uscc(code: str) -> str:
    """Return ``code`` unchanged if it is a valid USCC, else raise :class:`InvalidUSCC`."""
    what = "Unified Social Credit Code"
    if len(code) != _LENGTH:
        raise InvalidUSCC(f"{what} must have {_LENGTH} characters, got {len(code)}")
    _check_characters(code, what=what)
    _check_region(code, what=what)
    expected = check_character(code[:17])
    if code[17] != expected:
        raise InvalidUSCC(f"{what}: check character (position 18) is {code[17]!r}, expected {expected!r}")
    return code


def region_of(code: str) -> str:
    """The registering authority's administrative division code (positions 3-8) of a valid code."""
    return validate_uscc(code)[2:8]


def make_uscc(prefix17: str) -> str:
    """Append the check character to a 17-character prefix (for tests and demo data)."""
    what = "USCC prefix"
    if len(prefix17) != _LENGTH - 1:
        raise InvalidUSCC(f"{what} must have {_LENGTH - 1} characters, got {len(prefix17)}")
    _check_characters(prefix17, what=what)
    _check_region(prefix17, what=what)
    return prefix17 + check_character(prefix17)


def validate_region_code(code: str) -> str:
    """Return ``code`` if it is exactly six ASCII digits, else raise :class:`InvalidRegionCode`."""
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        raise InvalidRegionCode(f"a region code is exactly 6 digits (GB/T 2260), got {code!r}")
    return code


class InvalidEmail(ValueError):
    """The text is not an e-mail address the service sends to."""


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def validate_email(address: str) -> str:
    """``address`` as stored if mail can be sent to it, else raise :class:`InvalidEmail`.

    ``local@domain``: the local part an ASCII dot-atom of at most 64 characters (no quoted strings), the
    domain a name of at least two labels, not an IP address; an internationalized domain is kept in its ASCII
    (punycode) form. The domain is stored in lower case (the local part as given); at most 254 characters.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEmail("an e-mail address is written local-part@domain, e.g. finance@example.cn")
    if len(local) > 64 or not _DOT_ATOM.fullmatch(local):
        raise InvalidEmail(
            "the part before @ holds at most 64 letters, digits and !#$%&'*+/=?^_`{|}~- with single dots "
            "between them"
        )
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidEmail(f"{domain!r} is not a domain name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or labels[-1].isdigit() or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidEmail(f"{domain!r} is not a domain name of at least two labels, e.g. example.cn")
    stored = f"{local}@{ascii_domain}"
    if len(stored) > 254:
        raise InvalidEmail("an e-mail address has at most 254 characters")
    return stored
