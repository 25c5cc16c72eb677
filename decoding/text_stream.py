"""Incremental text for streaming: new text per token that is never a broken multi-byte character and
never the start of a stop string that may still complete."""

from __future__ import annotations

from collections.abc import Sequence


class IncrementalDetokenizer:
    """Decode a growing token list piece by piece.

    Each step decodes a short window (the tokens since the last emitted boundary) rather than the whole
    sequence; text that ends in U+FFFD is held back because the next token may complete the character.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token and return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        current = self._decode(self.ids[self.prefix_offset:])
        if current.endswith("\ufffd") or len(current) <= len(prefix):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return current[len(prefix):]

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end of generation)."""
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        current = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return current[len(prefix):]


def find_stop(text: str, stops: Sequence[str], search_from: int) -> int:
    """Index of the earliest stop string in ``text`` that ends after ``search_from``, or -1."""
    best = -1
    for stop in stops:
        at = text.find(stop, max(0, search_from - len(stop) + 1))
        if at != -1 and (best == -1 or at < best):
            best = at
    return best


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
