"""A chain-of-thought as units with exact character offsets.

Truncate searches over k = "the first k units", so a unit split must give back prefixes that
are exact slices `cot[:end]` of the teacher's text. The reference split with `split(". ")` and
glued the pieces back together, which dropped newlines and doubled periods; here a split is
only a list of end offsets into the untouched text, and a prefix is always `text[:end]`.

Whitespace between units belongs to the next unit, so every prefix ends on content (a period,
the last character of a line), and no unit is whitespace alone (blank lines merge forward).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNIT_KINDS = ("sentence", "line", "paragraph", "reference")

# Words whose trailing period does not end a sentence (lower case, inner dots kept).
ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf dr mr mrs ms prof st jr sr fig eq eqn approx resp no nos vol pp ch sec".split()
)
# `no.` only counts before a number ("No. 5"); see _is_abbreviation.
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "vol", "pp", "ch", "sec", "fig", "eq", "eqn"})

_SENTENCE_END = re.compile(r"[.?!]+[\"'\u201d\u2019)\]]*(?=\s)")
_LINE_BREAK = re.compile(r"\r?\n")
_BLANK_LINES = re.compile(r"\r?\n(?:[ \t]*\r?\n)+")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)\.$")
_OPERATOR_NEXT = re.compile(r"\s*[=+\-*/\u00d7\u00b7^<>\u2264\u2265]")
_MATH_OPEN = re.compile(r"\\\(|\\\[|\$\$|(?<!\\)\$|\\begin\{([^}\n]{1,40})\}")


@dataclass(frozen=True)
class Units:
    """A text and the end offset of each unit: unit k (1-based) is text[ends[k-2]:ends[k-1]]."""

    text: str
    ends: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ends)

    def end(self, k: int) -> int:
        """Character offset where the prefix of k units ends."""
        return self.ends[k - 1]

    def prefix(self, k: int) -> str:
        """The first k units, exactly as they appear in the text."""
        return self.text[: self.ends[k - 1]]

    def pieces(self) -> list[str]:
        starts = (0, *self.ends[:-1])
        return [self.text[s:e] for s, e in zip(starts, self.ends, strict=True)]


def split_units(text: str, unit: str = "sentence") -> Units:
    """Split `text` into units of the given kind (one of UNIT_KINDS)."""
    if unit == "reference":
        return Units(text, _reference_ends(text))
    if unit == "sentence":
        cuts = _sentence_cuts(text)
    elif unit == "line":
        cuts = [m.start() for m in _LINE_BREAK.finditer(text)]
    elif unit == "paragraph":
        cuts = [m.start() for m in _BLANK_LINES.finditer(text)]
    else:
        raise ValueError(f"unknown unit {unit!r}; expected one of {', '.join(UNIT_KINDS)}")
    return Units(text, _content_ends(text, cuts))


def _content_ends(text: str, cuts: list[int]) -> tuple[int, ...]:
    """Keep the cuts that leave content on both sides; the last unit ends at len(text)."""
    ends: list[int] = []
    last = 0
    last_content = _last_content(text)
    for cut in sorted(set(cuts)):
        if cut <= last or cut > last_content:
            continue
        if text[last:cut].strip():
            ends.append(cut)
            last = cut
    ends.append(len(text))
    return tuple(ends)


def _last_content(text: str) -> int:
    """Offset of the last non-whitespace character: a cut past it would leave only space."""
    return len(text.rstrip()) - 1


def _sentence_cuts(text: str) -> list[int]:
    spans = math_spans(text)
    cuts = [m.end() for m in _SENTENCE_END.finditer(text) if _ends_sentence(text, m)]
    cuts += [m.start() for m in _LINE_BREAK.finditer(text)]
    return [c for c in cuts if not _inside(spans, c)]


def _ends_sentence(text: str, m: re.Match[str]) -> bool:
    """A period (or ?/!) before whitespace ends a sentence, unless it is one of the known exceptions."""
    punct = m.group(0)
    after = text[m.end():m.end() + 12]
    if _OPERATOR_NEXT.match(after):
        return False  # "5! = 120", "x. = ..." is arithmetic, not prose
    if punct.startswith("!") and len(punct) == 1:
        nxt = after.lstrip()[:1]
        if nxt and (nxt.islower() or nxt.isdigit()):
            return False  # factorial: "n! ways", "3! 4!"
    if punct.startswith(".") and len(punct.rstrip("\"'\u201d\u2019)]")) == 1:
        dot = m.start() + 1
        if _is_abbreviation(text[max(0, dot - 24):dot], after):
            return False
        if _is_list_marker(text[text.rfind("\n", 0, dot) + 1:dot]):
            return False
    return True


def _is_abbreviation(head: str, after: str) -> bool:
    word = _WORD_BEFORE.search(head)
    if not word:
        return False
    w = word.group(1).lower()
    if w not in ABBREVIATIONS:
        return False
    if w in _NUMBER_ABBREVIATIONS:
        return after.lstrip()[:1].isdigit() or after.lstrip()[:1] == "("
    return True


def _is_list_marker(line: str) -> bool:
    """"1." or "12." alone at the start of a line numbers a list item; it ends nothing."""
    return bool(re.fullmatch(r"[ \t]*\d{1,3}\.", line))


def math_spans(text: str) -> list[tuple[int, int]]:
    """Half-open (start, end) spans of LaTeX math: $..$, $$..$$, \\(..\\), \\[..\\], \\begin..\\end.

    An opener with no closer is taken as literal text (a lone "$5" is a price, not math), and an
    inline `$` never runs past a blank line.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        m = _MATH_OPEN.search(text, pos)
        if m is None:
            return spans
        end = _math_close(text, m)
        if end is None:
            pos = m.end()
            continue
        spans.append((m.start(), end))
        pos = end


def _math_close(text: str, m: re.Match[str]) -> int | None:
    opener = m.group(0)
    if opener == "\\(":
        i = text.find("\\)", m.end())
        return None if i < 0 else i + 2
    if opener == "\\[":
        i = text.find("\\]", m.end())
        return None if i < 0 else i + 2
    if opener == "$$":
        i = text.find("$$", m.end())
        return None if i < 0 else i + 2
    if opener == "$":
        return _inline_dollar_close(text, m.end())
    env = m.group(1)
    i = text.find(f"\\end{{{env}}}", m.end())
    return None if i < 0 else i + len(env) + 6


_DOLLAR = re.compile(r"(?<!\\)\$")


def _inline_dollar_close(text: str, start: int) -> int | None:
    """Pandoc's rule for `$...$`: the opener is followed by non-space, the closer preceded by
    non-space and not followed by a digit; so "costs $5 and $6" holds no math."""
    if start >= len(text) or text[start].isspace():
        return None
    blank = text.find("\n\n", start)
    for found in _DOLLAR.finditer(text, start, blank if blank >= 0 else len(text)):
        i = found.start()
        if i > start and not text[i - 1].isspace() and not text[i + 1:i + 2].isdigit():
            return i + 1
    return None


def _inside(spans: list[tuple[int, int]], cut: int) -> bool:
    """Whether a cut falls strictly inside a math span (binary search over sorted spans)."""
    lo, hi = 0, len(spans)
    while lo < hi:
        mid = (lo + hi) // 2
        if spans[mid][1] <= cut:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(spans) and spans[lo][0] < cut < spans[lo][1]


def _reference_ends(text: str) -> tuple[int, ...]:
    """The reference's `text.split(". ")` units, as offsets: unit i keeps its period.

    Same unit count and boundaries as the reference (for comparisons), but its prefixes are
    exact text: the reference rejoined pieces and appended a period, doubling some.
    """
    pieces = text.split(". ")
    ends: list[int] = []
    offset = 0
    for piece in pieces[:-1]:
        offset += len(piece) + 1  # the piece and its "."
        ends.append(offset)
        offset += 1  # the space, which starts the next unit
    ends.append(len(text))
    return tuple(ends)
