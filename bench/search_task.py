"""The search benchmark's task: add a short list of one-digit numbers, one addition per step.

Written for this benchmark. Prompts are chat conversations with two worked examples, so the default
model (SmolLM2-135M-Instruct) answers in the checkable format ``a + b = c`` per step, separated by blank
lines, then ``Answer: N``. Greedy it solves roughly a third of the problems: a search has room to help.
The step verifier knows the numbers, so it can check each step of a partial answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

SHOTS = (
    ("Add 3, 4 and 2.", "3 + 4 = 7\n\n7 + 2 = 9\n\nAnswer: 9"),
    ("Add 5, 1 and 6.", "5 + 1 = 6\n\n6 + 6 = 12\n\nAnswer: 12"),
)
_STEP = re.compile(r"^\s*(-?\d+)\s*\+\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_ANSWER = re.compile(r"Answer:\s*(-?\d+)")


@dataclass(frozen=True)
class Problem:
    numbers: tuple[int, ...]

    @property
    def question(self) -> str:
        head = ", ".join(map(str, self.numbers[:-1]))
        return f"Add {head} and {self.numbers[-1]}."

    @property
    def answer(self) -> int:
        return sum(self.numbers)

    def prompt(self) -> list[dict[str, str]]:
        messages = []
        for user, assistant in SHOTS:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return messages + [{"role": "user", "content": self.question}]

    def expected_steps(self) -> list[tuple[int, int, int]]:
        steps, total = [], self.numbers[0]
        for x in self.numbers[1:]:
            steps.append((total, x, total + x))
            total += x
        return steps

    def graded(self, text: str) -> tuple[int, int]:
        """(correct steps, steps) over the blocks written so far: a step is correct when it is the
        expected addition at its place (or, right after them, the right ``Answer:``)."""
        blocks = [b for b in text.split("\n\n") if b.strip()]
        expected = self.expected_steps()
        correct = 0
        for k, block in enumerate(blocks):
            if k < len(expected):
                m = _STEP.match(block)
                correct += bool(m) and tuple(int(g) for g in m.groups()) == expected[k]
            else:
                m = _ANSWER.search(block)
                correct += bool(m) and int(m.group(1)) == self.answer and k == len(expected)
        return correct, len(blocks)

    def verify(self, text: str) -> float:
        """Step verifier: (correct steps + 1) / (steps + 2)."""
        correct, steps = self.graded(text)
        return (correct + 1) / (steps + 2)

    def verify_strict(self, text: str) -> float:
        """A sharper step verifier: 0.9 while every step so far is right, else 0.1 (the over-confident
        kind of reward ePF's annealing is meant for)."""
        correct, steps = self.graded(text)
        return 0.9 if correct == steps else 0.1

    def solved(self, text: str) -> bool:
        """Outcome check: the final ``Answer:`` (else the last number) is the sum."""
        found = _ANSWER.findall(text) or re.findall(r"-?\d+", text)
        return bool(found) and int(found[-1]) == self.answer


def problems(count: int, seed: int = 0) -> list[Problem]:
    """``count`` problems of three or four one-digit numbers."""
    rng = random.Random(seed)
    return [Problem(tuple(rng.randint(1, 9) for _ in range(rng.choice((3, 3, 4))))) for _ in range(count)]
