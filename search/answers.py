"""Final answers: extracting one from a text, and voting over them."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")

Extractor = Callable[[str], "str | None"]


def last_number(text: str) -> str | None:
    """The last number in ``text`` (commas dropped, ``12.0`` read as ``12``), or ``None``.

    >>> last_number("3 + 4 = 7\\n\\nAnswer: 1,200.0"), last_number("no digits")
    ('1200', None)
    """
    found = _NUMBER.findall(text)
    if not found:
        return None
    number = found[-1].replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number


def vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> tuple[str | None, dict[str, float]]:
    """The answer with the largest total weight (each vote weighs 1 by default) and the tally; ``None``
    answers do not vote. Ties go to the answer seen first.

    >>> vote(["7", "8", "7", None])
    ('7', {'7': 2.0, '8': 1.0})
    """
    tally: dict[str, float] = {}
    for k, answer in enumerate(answers):
        if answer is not None:
            tally[answer] = tally.get(answer, 0.0) + (1.0 if weights is None else float(weights[k]))
    if not tally:
        return None, tally
    return max(tally, key=lambda a: tally[a]), tally
