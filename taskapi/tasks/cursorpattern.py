"""The regular expression of the list's `cursor`, for the OpenAPI schema.

A cursor is `Cursor.encode(last_id)` (`taskapi.tasks.router`): the URL-safe base64 of
`id:<last_id>` without padding, `last_id` a canonical decimal (no sign, no leading zero) from 0
to 2**63 - 1; `Cursor.decode` takes exactly those strings. The set is finite, so a regular
expression can state it exactly, and `CURSOR_PATTERN` does: it is derived here from base64
itself, digit by digit, rather than written by hand.

Why that works: `id:` is three bytes, one base64 quantum, so the digits start a quantum of
their own. In a quantum of three ASCII digits `a b c` (bytes 0x30-0x39), base64's first two
characters depend on `a` alone, the third on `b` alone and the fourth on `c` alone (each
digit's high nibble is 0x3, which fills the bits its neighbours share); a last quantum of one
or two digits is the same, except that a lone last digit `a` ends in another second character.
So every digit becomes a fixed token by its position, and a set of digits a character class.
`tests/tasks/test_schema_contract.py` checks the equivalence both ways.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

DIGITS = "0123456789"
NONZERO = DIGITS[1:]


def _b64(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _check_independence() -> None:
    """The property this module rests on: a digit's characters depend on that digit only."""
    for a in DIGITS:
        assert _b64(a) == _first(a, last=True)
        for b in DIGITS:
            assert _b64(a + b) == _first(a, last=False) + _second(b)
            for c in DIGITS:
                assert _b64(a + b + c) == _first(a, last=False) + _second(b) + _third(c)


def _first(digit: str, *, last: bool) -> str:
    """The two characters of a digit opening a quantum (a lone last digit ends otherwise)."""
    return _b64(digit)[:2] if last else _b64(digit + "00")[:2]


def _second(digit: str) -> str:
    return _b64("0" + digit + "0")[2]


def _third(digit: str) -> str:
    return _b64("00" + digit)[3]


def _char_class(chars: Iterable[str]) -> str:
    chosen = sorted(set(chars))
    assert all(char.isascii() and char.isalnum() for char in chosen)
    return chosen[0] if len(chosen) == 1 else "[" + "".join(chosen) + "]"


def _token(digits: str, position: int, *, last: bool) -> str:
    """The regex of one digit from `digits` at `position` of the number."""
    role = position % 3
    if role == 1:
        return _char_class(_second(d) for d in digits)
    if role == 2:
        return _char_class(_third(d) for d in digits)
    pairs: dict[str, set[str]] = {}
    for d in digits:
        token = _first(d, last=last)
        pairs.setdefault(token[0], set()).add(token[1])
    options = [f"{first}{_char_class(seconds)}" for first, seconds in sorted(pairs.items())]
    return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"


def _number(digit_sets: list[str], start: int, length: int) -> str:
    """The regex of digits `digit_sets` at positions `start`.. of a `length`-digit number,
    with runs of whole quanta of any digit folded into `(?:...){n}`."""
    pieces = [
        _token(digits, start + i, last=start + i == length - 1)
        for i, digits in enumerate(digit_sets)
    ]
    out: list[str] = []
    i = 0
    while i < len(pieces):
        if (start + i) % 3 == 0 and all(d == DIGITS for d in digit_sets[i : i + 3]):
            quantum = "".join(pieces[i : i + 3])
            run = 0
            while (
                i + 3 * (run + 1) <= len(pieces)
                and "".join(pieces[i + 3 * run : i + 3 * run + 3]) == quantum
                and all(d == DIGITS for d in digit_sets[i + 3 * run : i + 3 * run + 3])
            ):
                run += 1
            if run > 1:
                out.append(f"(?:{quantum}){{{run}}}")
                i += 3 * run
                continue
        out.append(pieces[i])
        i += 1
    return "".join(out)


def _at_most(maximum: str, position: int) -> str:
    """Digits `position`.. of a number as long as `maximum`, equal to it before `position`,
    such that the whole is at most `maximum`, leading digit not zero."""
    length = len(maximum)
    if position == length:
        return ""
    bound = maximum[position]
    smaller = "".join(d for d in DIGITS if d < bound and (position > 0 or d != "0"))
    equal = _token(bound, position, last=position == length - 1) + _at_most(maximum, position + 1)
    if not smaller:
        return equal
    below = _number([smaller] + [DIGITS] * (length - position - 1), position, length)
    return f"(?:{below}|{equal})"


def _shorter(length: int) -> str:
    """Canonical numbers of 1..`length` digits other than 0 (so: no leading zero)."""
    assert length >= 3

    def any_quantum() -> str:
        return _number([DIGITS] * 3, 3, 6)  # positions 3..5 of a longer number

    def tail(size: int) -> str:
        return _number([DIGITS] * size, 3, 3 + size) if size else ""

    one = _number([NONZERO], 0, 1)
    two = _number([NONZERO, DIGITS], 0, 2)
    # Three or more: a first quantum, then whole quanta, then a last digit or two.
    first = _number([NONZERO, DIGITS, DIGITS], 0, 6)
    rest = "|".join(
        f"(?:{any_quantum()}){{0,{(length - 3 - size) // 3}}}{tail(size)}" for size in (0, 1, 2)
    )
    return f"{one}|{two}|{first}(?:{rest})"


def cursor_pattern(max_id: int, prefix: str = "id:") -> str:
    """An anchored regex of exactly the cursors of ids 0..`max_id` (see the module's doc)."""
    assert len(prefix.encode()) % 3 == 0, "the digits must start a base64 quantum"
    _check_independence()
    longest = str(max_id)
    zero = _number(["0"], 0, 1)
    return f"^{_b64(prefix)}(?:{zero}|{_shorter(len(longest) - 1)}|{_at_most(longest, 0)})$"


CURSOR_PATTERN = cursor_pattern(2**63 - 1)


KEYSET_PREFIX = _b64('["k1",')
"""How every `KeysetCursor` begins: the URL-safe base64 of its JSON array's first item (six
bytes, two whole quanta, so the prefix is fixed whatever follows)."""


def any_cursor_pattern(max_keyset_length: int) -> str:
    """The list's `cursor`: an id cursor (`CURSOR_PATTERN`, exactly), or a keyset cursor.

    A keyset cursor holds the last task's sort values and the digest of the sort and filters
    it was issued for, so no pattern can say which ones the service takes: the pattern's
    keyset branch is the cursor's form (its prefix, then base64url without padding), and a
    cursor of that form the service did not issue for this sort and these filters is a 422
    `VALIDATION_ERROR` naming `query.cursor`.
    """
    rest = max_keyset_length - len(KEYSET_PREFIX)
    return f"^(?:{CURSOR_PATTERN[1:-1]}|{KEYSET_PREFIX}[A-Za-z0-9_-]{{1,{rest}}})$"
