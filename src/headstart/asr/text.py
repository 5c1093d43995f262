"""Transcript text: numbers as words, normalising, word error rate.

Both sides of a comparison go through :func:`normalize_text` alike: lower case, punctuation
removed, numbers written as words ("500" → "five hundred"). :func:`word_error_rate` is the
corpus WER (substitutions + deletions + insertions over reference words) of a minimum
word-level alignment that prefers substitutions (as jiwer and sclite do).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["WERResult", "edit_counts", "normalize_text", "number_to_words", "word_error_rate"]


# ============================================================================ normalising

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def number_to_words(n: int) -> str:
    """``n`` in words as spoken in (British/American) English without "and": 1500 → "one
    thousand five hundred", 250 → "two hundred fifty". Negative numbers get "minus"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (" " + _ONES[ones] if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + (" " + number_to_words(rest) if rest else "")
    for value, word in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return (
                number_to_words(high) + f" {word}" + (" " + number_to_words(rest) if rest else "")
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _digits_to_words(match: re.Match[str]) -> str:
    text = match.group(0)
    number, suffix = match.group(1), (match.group(2) or "").lower()
    whole, _, frac = number.replace(",", "").partition(".")
    if len(whole) > 15:  # a code or identifier, not a quantity: read digit by digit
        return " ".join(_ONES[int(d)] for d in text if d.isdigit())
    words = number_to_words(int(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    if suffix in ("st", "nd", "rd", "th") and not frac:
        words = _ordinal(words)
    return f" {words} "


_NUMBER = re.compile(r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(st|nd|rd|th)?", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """Lower case, numbers as words, punctuation removed, single spaces.

    ``"Take 2.5 mg, twice-daily!"`` → ``"take two point five mg twice daily"``;
    ``"the 3rd of May"`` → ``"the third of may"``; ``"1,000"`` → ``"one thousand"``;
    ``"50%"`` → ``"fifty percent"``; ``"don't"`` → ``"dont"`` (apostrophes are dropped, on
    both sides alike). Units are not expanded ("mg" stays "mg").
    """
    s = str(text).lower()
    s = s.replace("%", " percent ").replace("&", " and ")
    s = re.sub(r"(\d)([a-z])", r"\1 \2", s)  # "500mg" → "500 mg"
    s = re.sub(r"(\d) (st|nd|rd|th)\b", r"\1\2", s)  # ... but keep "3rd" together
    s = _NUMBER.sub(_digits_to_words, s)
    s = re.sub(r"['’`]", "", s)
    s = re.sub(r"[^\w\s]|_", " ", s)
    return " ".join(s.split())


# ================================================================================== WER


@dataclass
class WERResult:
    """Corpus word error rate: (substitutions + deletions + insertions) / reference words."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    n_utterances: int
    utterance_wer: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, utterances: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not utterances:
            d.pop("utterance_wer")
        return d


def edit_counts(ref: Sequence[str], hyp: Sequence[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimum word-level alignment.

    Among alignments with the fewest edits, the one with the most substitutions is chosen
    (as jiwer and sclite do), so that a wrong word counts as one error, not two.
    """
    n, m = len(ref), len(hyp)
    # cost[i][j] = (edits, -substitutions) of ref[:i] vs hyp[:j]; tuples compare lexically.
    prev = [(j, 0, 0, 0, j) for j in range(m + 1)]  # (edits, -subs, S, D, I)
    for i in range(1, n + 1):
        cur = [(i, 0, 0, i, 0)]
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                e, ns, s, d, ins = prev[j - 1]
                best = (e + 1, ns - 1, s + 1, d, ins)
            e, ns, s, d, ins = prev[j]
            best = min(best, (e + 1, ns, s, d + 1, ins))
            e, ns, s, d, ins = cur[j - 1]
            best = min(best, (e + 1, ns, s, d, ins + 1))
            cur.append(best)
        prev = cur
    _, _, s, d, ins = prev[m]
    return s, d, ins


def word_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], *, normalize: bool = True
) -> WERResult:
    """Corpus WER of ``hypotheses`` against ``references`` (same length, same order).

    With ``normalize`` (default) both go through :func:`normalize_text` first. An empty
    reference contributes its hypothesis' words as insertions; the corpus WER is then over
    the other references' words (ConfigError when there are none at all).
    """
    if len(references) != len(hypotheses):
        raise ConfigError(
            f"word_error_rate needs one hypothesis per reference; got {len(references)} "
            f"references and {len(hypotheses)} hypotheses."
        )
    tot = [0, 0, 0, 0]
    per: list[float] = []
    for r, h in zip(references, hypotheses, strict=True):
        rw = (normalize_text(r) if normalize else str(r)).split()
        hw = (normalize_text(h) if normalize else str(h)).split()
        s, d, i = edit_counts(rw, hw)
        tot[0] += s
        tot[1] += d
        tot[2] += i
        tot[3] += len(rw)
        per.append((s + d + i) / len(rw) if rw else float(len(hw)))
    if tot[3] == 0 and references:
        raise ConfigError("Every reference transcript is empty: word error rate is undefined.")
    wer = (tot[0] + tot[1] + tot[2]) / tot[3] if tot[3] else 0.0
    return WERResult(wer, tot[0], tot[1], tot[2], tot[3], len(references), per)
