"""Answer shapes that palign's wrapper around math-verify must read right (issue 12, classes 1-5).

These are not second opinions: each undoes a way the text reached math-verify in a form that
changes what it parses, so they apply always (also under `--strict`). Pure text functions, one
named shape each, so a test table can hit each and a report can say which shape touched what:

- `delimiters`: a gold that carries its own math delimiters (`$..$`, `$$..$$`, `\\(..\\)`,
  `\\[..\\]`) is unwrapped before palign wraps it in `$..$` once; an escaped `\\$` is a dollar
  sign, never a delimiter.
- `double_escaped`: a gold escaped twice by a JSON export (`\\\\frac`) is escaped once again.
- `unit_words`: a bare unit word after a number in the gold (`10 weeks`, `10 cm^2`) is dropped
  (math-verify would read `10 weeks` as the product 10*w*e*e*k*s); a box holding the same words
  loses them too, so a model that copies the gold's form still matches.
- `thousands`: thousands separators inside `\\boxed{}` (`58\\,500`, `10 000`, `10{,}000`), which
  math-verify reads as two numbers (`\\boxed{58\\,500}` grades as 558).
- `dollar`: a dollar sign inside `\\boxed{}` (`\\$18`, `\\text{\\$}18`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

FORMS = ("delimiters", "double_escaped", "unit_words", "thousands", "dollar")

# --- boxes ----------------------------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def boxed_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the content of each top-level `\\boxed{...}` (braces balanced)."""
    spans, at = [], 0
    while True:
        m = _BOX.search(text, at)
        if m is None:
            return spans
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "\\" and i + 1 < len(text):
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:  # unbalanced (a cut-off sample): no box here
            return spans
        spans.append((m.end(), i - 1))
        at = i


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{}` in the text, or None."""
    spans = boxed_spans(text)
    return text[spans[-1][0] : spans[-1][1]] if spans else None


def map_boxed(text: str, fn: Callable[[str], str]) -> str:
    """The text with `fn` applied to the content of every `\\boxed{}`."""
    out, at = [], 0
    for start, end in boxed_spans(text):
        out += [text[at:start], fn(text[start:end])]
        at = end
    out.append(text[at:])
    return "".join(out)


# --- class 1: delimiters the gold already carries ----------------------------------------------


def _unescaped(s: str, ch: str) -> list[int]:
    """Positions of `ch` in s that no backslash escapes."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s[i] == ch:
            out.append(i)
        i += 1
    return out


def strip_delimiters(gold: str) -> str:
    """`$x$`, `$$x$$`, `\\(x\\)`, `\\[x\\]` -> `x` when the delimiters enclose the whole gold.

    `\\$18` keeps its escaped dollar; `$a$ and $b$` is left alone (two formulas, not one).
    """
    s = gold.strip()
    while True:
        inner = None
        dollars = _unescaped(s, "$")
        if s.startswith("$$") and s.endswith("$$") and len(s) > 4 and dollars == [0, 1, len(s) - 2, len(s) - 1]:
            inner = s[2:-2]
        elif s.startswith("$") and len(s) > 2 and dollars == [0, len(s) - 1]:
            inner = s[1:-1]
        else:
            for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
                body = s[2:-2]
                if s.startswith(left) and s.endswith(right) and len(s) > 4 and left not in body and right not in body:
                    inner = body
        if inner is None or not inner.strip():
            return s
        s = inner.strip()


# --- class 4: a gold escaped twice ---------------------------------------------------------------

_RUNS = re.compile(r"\\+")
_DOUBLED = re.compile(r"\\\\[A-Za-z{}()\[\]$,!%]")


def unescape_doubled(gold: str) -> str:
    """`\\\\frac{1}{2}` -> `\\frac{1}{2}` when every backslash in the gold is doubled.

    Only then: a matrix's row break `\\\\` sits next to single-backslash commands
    (`\\begin{pmatrix}`), so a once-escaped gold always has an odd run somewhere.
    """
    runs = _RUNS.findall(gold)
    if not runs or not _DOUBLED.search(gold) or any(len(r) % 2 for r in runs):
        return gold
    return _RUNS.sub(lambda m: "\\" * (len(m.group()) // 2), gold)


# --- class 3: a bare unit word after a number --------------------------------------------------

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_UNIT_WORDS = re.compile(
    rf"^(?P<num>{_NUMBER})\s*(?P<unit>[A-Za-z]{{2,}}(?:\s*/\s*[A-Za-z]+|\s+[A-Za-z]{{2,}})*)\s*(?:\^\s*\{{?[23]\}}?)?\.?$"
)
# Letter runs that are mathematics or a time of day, not units, after a number (`2pi`, `3 pm`).
_NOT_UNITS = frozenset({"pi", "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "mod", "sqrt", "deg", "am", "pm"})


def unit_of(answer: str) -> str | None:
    """The bare unit words after a number (`10 cm^2` -> `cm^2`), spelled one way, or None."""
    m = _UNIT_WORDS.match(answer.strip())
    if m is None or m.group("unit").split()[0].lower() in _NOT_UNITS:
        return None
    tail = answer.strip()[m.end("unit"):].strip().rstrip(".")
    words = [w.lower().removesuffix("s") if len(w) > 3 else w.lower() for w in re.split(r"\s+", m.group("unit"))]
    return " ".join(words) + re.sub(r"[\s{}]", "", tail)


def strip_unit_words(answer: str, unit: str | None = None) -> str:
    """`10 weeks` -> `10`, `10 cm^2` -> `10`; anything else unchanged (`2pi` stays).

    With `unit`, only that unit goes (`10 days` stays when the gold says weeks)."""
    found = unit_of(answer)
    if found is None or (unit is not None and found != unit):
        return answer
    m = _UNIT_WORDS.match(answer.strip())
    return m.group("num") if m else answer


# --- class 2: thousands separators -------------------------------------------------------------

# A separator between digit groups: thin spaces (`\,` `\;` `\:` `\!` `\ ` `~`), a space, or
# the braced comma MATH writes (`{,}`, also `,\!`). A plain comma math-verify reads itself.
_SEP = r"(?:\\[,;:! ]|~|\{,\}|,\\!|\\thinspace\s?| )"
_GROUPED = re.compile(r"(?<![\d.])(\d{1,3}(?:" + _SEP + r"\d{3})+)(?![\d])")
_SEP_RE = re.compile(_SEP)


def drop_thousands_separators(answer: str) -> str:
    """`58\\,500` -> `58500`, `10 000` -> `10000`, `1\\,234\\,567.5` -> `1234567.5`.

    Only 1-3 leading digits then groups of exactly three, not after a decimal point, so
    `3.141 592` and `1 2` are left alone.
    """
    return _GROUPED.sub(lambda m: _SEP_RE.sub("", m.group(1)), answer)


# --- class 5: dollar signs in a box ------------------------------------------------------------

_DOLLAR = re.compile(r"\\(?:text|mbox|textrm|mathrm)\s*\{\s*\\\$\s*\}|\\textdollar\b|\\\$")


def drop_dollar_signs(answer: str) -> str:
    """`\\$18` -> `18`, `\\text{\\$}18` -> `18` (a dollar amount, not a delimiter)."""
    return _DOLLAR.sub("", answer)


# --- the two entry points ----------------------------------------------------------------------


_GOLD_STEPS: list[tuple[str, Callable[[str], str]]] = [
    ("double_escaped", unescape_doubled),
    ("delimiters", strip_delimiters),
    ("thousands", drop_thousands_separators),
]


def normalize_gold(gold: str) -> tuple[str, tuple[str, ...]]:
    """The gold as math-verify should see it (before palign's own `$..$`), and the names of
    the shapes that changed it."""
    return _apply(gold, [*_GOLD_STEPS, ("unit_words", strip_unit_words)])


def gold_unit(gold: str) -> str | None:
    """The bare unit words the gold ends in (`10 weeks` -> `week`), or None."""
    return unit_of(_apply(gold, _GOLD_STEPS)[0])


def normalize_prediction(text: str, *, unit: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The completion with every `\\boxed{}` content read right, and the names of the shapes
    that changed it. `unit`: the gold's bare unit words (`unit_of`), dropped in boxes too
    where a box carries the same unit."""
    steps: list[tuple[str, Callable[[str], str]]] = [
        ("dollar", lambda t: map_boxed(t, drop_dollar_signs)),
        ("thousands", lambda t: map_boxed(t, drop_thousands_separators)),
    ]
    if unit:
        steps.append(("unit_words", lambda t: map_boxed(t, lambda box: strip_unit_words(box, unit))))
    return _apply(text, steps)


def _apply(text: str, steps: list[tuple[str, Callable[[str], str]]]) -> tuple[str, tuple[str, ...]]:
    applied = []
    for name, fn in steps:
        new = fn(text)
        if new != text:
            applied.append(name)
            text = new
    return text, tuple(applied)
