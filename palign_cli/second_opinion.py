"""A narrow second opinion on math-verify's known blind spots (issue 12, class 6).

It runs only where math-verify said "no", and says "yes" only when both the gold and the
boxed answer parse as one of the shapes below and are equal as that shape. Each rule has a
name; the name of the rule that flipped a label goes into `Grade.flipped_by` and the eval
summary counts them, so a reader sees how many labels this changed. `--strict` turns it off.

- `stated_tolerance`: numbers equal within a precision the problem or the gold states ("to the
  nearest tenth", "rounded to 2 decimal places", a gold written `\\approx 3.14`). Nothing else
  gets a tolerance: 0.333 is not 1/3.
- `mixed_number`: `2 1/2` (and `2\\frac{1}{2}`) read as 5/2, never as 2 * 1/2.
- `imaginary_unit`: `i` is the imaginary unit when both sides are constants once it is
  (`(1+i)^2` = `2i`, `i^2` = `-1`, `3 - 4\\,i`, `\\mathrm{i}`).
- `time_of_day`: `4:30 p.m.`, `4:30`, `16:30` are one time (a missing a.m./p.m. matches either).
- `trig_degrees`: degrees inside a trigonometric argument (`\\sin 30^\\circ` = `\\frac12`).
- `matrix_vs_list`: a one-row or one-column matrix against a tuple or list of the same entries.
- `scientific_notation`: `2.5e-3` = `2.5\\times 10^{-3}` = `0.0025`.

Runs in a grading worker, under the worker's own timeout (math-verify's alarms are off).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

RULES = ("stated_tolerance", "mixed_number", "imaginary_unit", "time_of_day", "trig_degrees", "matrix_vs_list", "scientific_notation")


def _parse(expr: str) -> list[Any]:
    from math_verify import parse

    return parse(f"${expr}$", parsing_timeout=None)  # type: ignore[arg-type]


def _same(a: str, b: str) -> bool:
    """math-verify's own verdict on two bare expressions (gold first)."""
    from math_verify import verify

    pa, pb = _parse(a), _parse(b)
    return bool(pa and pb and verify(pa, pb, timeout_seconds=None))  # type: ignore[arg-type]


_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|mathit|operatorname)\s*\{([^{}]*)\}")
_SPACES = re.compile(r"\\[,;:! ]|~|\\quad|\\qquad|\s+")


def _plain(expr: str) -> str:
    """The expression without text wrappers, thin spaces, `\\left`/`\\right` and a final period."""
    s = _TEXT.sub(r"\1", expr)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return s.strip().rstrip(".").strip()


# --- stated_tolerance ------------------------------------------------------------------------------

_PLACES = {"tenth": 1, "hundredth": 2, "thousandth": 3, "ten-thousandth": 4, "whole number": 0, "integer": 0, "unit": 0, "cent": 2, "dollar": 0, "percent": 0, "degree": 0}
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_NEAREST = re.compile(r"nearest\s+(ten-thousandth|tenth|hundredth|thousandth|whole\s+number|integer|unit|cent|dollar|percent|degree)s?\b", re.I)
_DECIMALS = re.compile(r"\b(\d|one|two|three|four|five)\s+decimal\s+places?\b", re.I)
_APPROX = re.compile(r"^\s*(?:\\approx|\\sim|approximately|about)\s*")
_DECIMAL_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def _number(expr: str) -> Decimal | None:
    s = _SPACES.sub("", _plain(expr)).replace("{,}", "").replace(",", "").lstrip("\\$").rstrip("%")
    if not _DECIMAL_NUMBER.match(s):
        return None
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def stated_precision(gold: str, question: str | None) -> int | None:
    """Decimal places the gold or the problem states, or None (then no tolerance at all)."""
    if _APPROX.match(gold):
        value = _APPROX.sub("", gold).strip()
        return len(value.split(".", 1)[1]) if "." in value else 0
    if not question:
        return None
    m = _NEAREST.search(question)
    if m:
        return _PLACES[re.sub(r"\s+", " ", m.group(1).lower())]
    m = _DECIMALS.search(question)
    if m:
        word = m.group(1).lower()
        return int(word) if word.isdigit() else _WORDS[word]
    return None


def stated_tolerance(gold: str, pred: str, question: str | None = None) -> bool:
    places = stated_precision(gold, question)
    if places is None:
        return False
    g, p = _number(_APPROX.sub("", gold)), _number(pred)
    if g is None or p is None:
        return False
    # Strictly within half a unit of the stated place: a value exactly between two roundings
    # (2.55 to the nearest tenth) is left to math-verify.
    return abs(g - p) < Decimal(5) * Decimal(10) ** -(places + 1)


# --- mixed_number ----------------------------------------------------------------------------------

_MIXED = re.compile(r"^(-?)(\d+)\s*(?:\\frac\s*\{?(\d+)\}?\s*\{?(\d+)\}?|\s(\d+)\s*/\s*(\d+))$")


def _mixed(expr: str) -> Any:
    from sympy import Rational

    m = _MIXED.match(_plain(expr))
    if m is None:
        return None
    sign, whole = m.group(1), int(m.group(2))
    num, den = (m.group(3), m.group(4)) if m.group(3) else (m.group(5), m.group(6))
    if int(den) == 0 or int(num) >= int(den):
        return None
    value = whole + Rational(int(num), int(den))
    return -value if sign else value


def mixed_number(gold: str, pred: str, question: str | None = None) -> bool:
    g, p = _mixed(gold), _mixed(pred)
    if g is None and p is None:
        return False
    if g is not None and p is not None:
        return bool(g == p)
    value, other = (g, _constant(pred)) if g is not None else (p, _constant(gold))
    return other is not None and bool((value - other).equals(0))


# --- imaginary_unit --------------------------------------------------------------------------------

_I_SPACE = re.compile(r"(\d|\})\s*(?:\\[,;: ]|~|\s)*\s*(?=i\b)")
_ROMAN_I = re.compile(r"\\(?:mathrm|mathit|text|operatorname)\s*\{\s*i\s*\}")


def _complex_value(expr: str) -> Any:
    """The expression as a complex constant with `i` the imaginary unit, or None."""
    from sympy import I, nsimplify

    s = _ROMAN_I.sub("i", expr)
    s = _I_SPACE.sub(r"\1", s)
    if not re.search(r"(?<![a-zA-Z\\])i(?![a-zA-Z])", s):
        return None
    parsed = _parse(s)
    if not parsed or not hasattr(parsed[0], "free_symbols"):
        return None
    value = parsed[0].subs({sym: I for sym in parsed[0].free_symbols if sym.name == "i"})
    if value.free_symbols:
        return None
    try:
        return nsimplify(value.expand(complex=True))
    except (TypeError, ValueError):
        return None


def _constant(expr: str) -> Any:
    parsed = _parse(expr)
    if not parsed or not hasattr(parsed[0], "free_symbols") or parsed[0].free_symbols:
        return None
    return parsed[0]


def imaginary_unit(gold: str, pred: str, question: str | None = None) -> bool:
    from sympy import simplify

    g, p = _complex_value(gold), _complex_value(pred)
    if g is None and p is None:
        return False
    g = g if g is not None else _constant(gold)
    p = p if p is not None else _constant(pred)
    if g is None or p is None:
        return False
    return bool(simplify(g - p) == 0)


# --- time_of_day -----------------------------------------------------------------------------------

_TIME = re.compile(r"^(\d{1,2}):(\d{2})\s*(?:(a|p)\.?\s*m\.?)?$", re.I)


def _time(expr: str) -> tuple[int, int, str | None] | None:
    s = _SPACES.sub(" ", _plain(expr)).strip()
    m = _TIME.match(s)
    if m is None:
        return None
    h, minute, half = int(m.group(1)), int(m.group(2)), (m.group(3) or "").lower() or None
    if minute > 59 or h > 23 or (half and not 1 <= h <= 12):
        return None
    return h, minute, half


def time_of_day(gold: str, pred: str, question: str | None = None) -> bool:
    g, p = _time(gold), _time(pred)
    if g is None or p is None or g[1] != p[1]:
        return False
    if g[2] and p[2]:
        return (g[0] % 12, g[2]) == (p[0] % 12, p[2])
    return _on_24h(g) == _on_24h(p) if (g[2] or g[0] > 12) and (p[2] or p[0] > 12) else g[0] % 12 == p[0] % 12


def _on_24h(t: tuple[int, int, str | None]) -> int:
    h, _, half = t
    return h % 12 + (12 if half == "p" else 0) if half else h


# --- trig_degrees ----------------------------------------------------------------------------------

_TRIG = re.compile(r"\\(?:sin|cos|tan|sec|csc|cot)\b")
_DEGREES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^\s*\{?\s*\\circ\s*\}?|°)")


def _radians(expr: str) -> str | None:
    if not _TRIG.search(expr) or not _DEGREES.search(expr):
        return None
    return _DEGREES.sub(r"\\left(\\frac{\1\\pi}{180}\\right)", expr)


def trig_degrees(gold: str, pred: str, question: str | None = None) -> bool:
    g, p = _radians(gold), _radians(pred)
    if g is None and p is None:
        return False
    return _same(g or gold, p or pred)


# --- matrix_vs_list --------------------------------------------------------------------------------

_MATRIX = re.compile(r"^\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}$", re.S)
_BRACKETS = {"(": ")", "[": "]", "\\langle": "\\rangle"}


def _split_top(s: str, sep: str) -> list[str]:
    out, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append(s[start:i])
            start = i + 1
    out.append(s[start:])
    return [part.strip() for part in out]


def _grid(expr: str) -> tuple[str, list[list[str]]] | None:
    """('matrix' | 'list', rows of entries): a matrix, a bracketed list, or a list of lists.
    A one-row or one-column matrix is one row (a vector, however it stands)."""
    s = _plain(expr)
    m = _MATRIX.match(s)
    if m:
        rows = [r for r in (row.strip() for row in m.group(2).split("\\\\")) if r]
        cells = [[c.strip() for c in row.split("&")] for row in rows]
        if len({len(row) for row in cells}) != 1:
            return None
        return "matrix", [[row[0] for row in cells]] if len(cells[0]) == 1 else cells
    entries = _bracketed(s)
    if entries is None:
        return None
    inner = [_bracketed(e) for e in entries]
    if all(row is not None for row in inner) and len({len(row) for row in inner}) == 1:  # type: ignore[arg-type]
        return "list", inner  # type: ignore[return-value]
    return "list", [entries]


def _bracketed(s: str) -> list[str] | None:
    for left, right in _BRACKETS.items():
        if s.startswith(left) and s.endswith(right):
            entries = _split_top(s[len(left) : -len(right)], ",")
            if len(entries) >= 2 and all(entries):
                return entries
    return None


def matrix_vs_list(gold: str, pred: str, question: str | None = None) -> bool:
    g, p = _grid(gold), _grid(pred)
    if g is None or p is None or {g[0], p[0]} != {"matrix", "list"}:
        return False
    if [len(row) for row in g[1]] != [len(row) for row in p[1]]:
        return False
    return all(_same(a, b) for ga, pa in zip(g[1], p[1]) for a, b in zip(ga, pa))


# --- scientific_notation ---------------------------------------------------------------------------

_E_NOTATION = re.compile(r"^(-?\d+(?:\.\d+)?)\s*[eE]\s*([+-]?\d+)$")


def _scientific(expr: str) -> str | None:
    m = _E_NOTATION.match(_SPACES.sub("", _plain(expr)))
    return None if m is None else f"{m.group(1)}\\times 10^{{{int(m.group(2))}}}"


def scientific_notation(gold: str, pred: str, question: str | None = None) -> bool:
    g, p = _scientific(gold), _scientific(pred)
    if g is None and p is None:
        return False
    return _same(g or gold, p or pred)


# --- the entry point -------------------------------------------------------------------------------

_CHECKS: dict[str, Callable[[str, str, str | None], bool]] = {
    "stated_tolerance": stated_tolerance,
    "mixed_number": mixed_number,
    "imaginary_unit": imaginary_unit,
    "time_of_day": time_of_day,
    "trig_degrees": trig_degrees,
    "matrix_vs_list": matrix_vs_list,
    "scientific_notation": scientific_notation,
}


def second_opinion(gold: str, pred: str, question: str | None = None) -> str | None:
    """The name of the first rule under which `pred` equals `gold`, or None.

    `gold` is the normalized gold (answer_forms), `pred` the boxed answer (or what
    math-verify extracted where nothing is boxed). A rule that fails on odd input is a "no".
    """
    for name, check in _CHECKS.items():
        try:
            if check(gold, pred, question):
                return name
        except Exception:  # noqa: BLE001 - sympy on strange input; the answer stays "no"
            continue
    return None
