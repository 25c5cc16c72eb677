"""Verifiable tasks shipped with the trainer, and user tasks built from a prompt file and a callable.

A task hands out examples (a prompt and what a right answer is) for a step, and scores a completion in
[0, 1]. Examples depend only on ``(seed, step, index)``, so a resumed run sees the same prompts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..decoding.callables import load_callable
from ..search.answers import last_number
from ..decoding.checks import at_least

@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str


class Task(Protocol):
    def examples(self, seed: int, step: int, count: int) -> list[Example]: ...

    def reward(self, example: Example, completion: str) -> float: ...


def _rng(seed: int, step: int) -> random.Random:
    return random.Random(f"{seed}/{step}")


class Arithmetic:
    """Exact-answer arithmetic: "What is 12 + 7? Reply with the number only." Reward 1 when the last
    number of the completion is the answer, else 0 (the last, as for GSM8K: small models often restate
    the question before answering).

    Args:
        max_operand: operands are drawn from ``[0, max_operand]``.
        operations: any of ``"+"``, ``"-"``, ``"*"``.
    """

    def __init__(self, max_operand: int = 20, operations: str = "+") -> None:
        at_least("max_operand", max_operand, 1)
        if not operations or any(op not in "+-*" for op in operations):
            raise ValueError(f"`operations` must be made of '+', '-' and '*', got {operations!r}")
        self.max_operand = max_operand
        self.operations = operations

    def examples(self, seed: int, step: int, count: int) -> list[Example]:
        rng = _rng(seed, step)
        out = []
        for _ in range(count):
            a, b = rng.randint(0, self.max_operand), rng.randint(0, self.max_operand)
            op = rng.choice(self.operations)
            value = a + b if op == "+" else a - b if op == "-" else a * b
            out.append(Example(f"What is {a} {op} {b}? Reply with the number only.", str(value)))
        return out

    def reward(self, example: Example, completion: str) -> float:
        return 1.0 if last_number(completion) == example.answer else 0.0


class DigitsFormat:
    """A format constraint: "Write a number with exactly N digits and nothing else." Reward 1 for exactly
    N digits (surrounding whitespace allowed); otherwise half the share of the completion's
    non-space characters that are digits, so partial compliance is graded."""

    def __init__(self, min_digits: int = 3, max_digits: int = 8) -> None:
        at_least("min_digits", min_digits, 1)
        at_least("max_digits", max_digits, min_digits)
        self.min_digits, self.max_digits = min_digits, max_digits

    def examples(self, seed: int, step: int, count: int) -> list[Example]:
        rng = _rng(seed, step)
        digits = [rng.randint(self.min_digits, self.max_digits) for _ in range(count)]
        return [Example(f"Write a number with exactly {n} digits and nothing else.", str(n)) for n in digits]

    def reward(self, example: Example, completion: str) -> float:
        text = completion.strip()
        if text.isdigit() and text.isascii() and len(text) == int(example.answer):
            return 1.0
        chars = [c for c in text if not c.isspace()]
        return 0.5 * sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0


class PromptFile:
    """User prompts from a JSON-lines file (``{"prompt": ..., "answer": ...}`` per line; ``answer``
    optional) scored by ``reward(prompt, completion, answer) -> float in [0, 1]``. Each step takes the
    next ``count`` prompts of a per-epoch shuffle of the file."""

    def __init__(self, path: str | Path, reward: Callable[[str, str, str], float] | str) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
        self.items = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self.items.append(Example(str(record["prompt"]), str(record.get("answer", ""))))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{number}: each line must be a JSON object with a \"prompt\"") from None
        if not self.items:
            raise ValueError(f"prompt file {str(path)!r} holds no prompts")
        self.score = load_callable(reward, "`reward`") if isinstance(reward, str) else reward

    def examples(self, seed: int, step: int, count: int) -> list[Example]:
        orders: dict[int, list[int]] = {}  # one shuffle per epoch the step touches, not one per example
        out = []
        for k in range(step * count, (step + 1) * count):
            epoch, position = divmod(k, len(self.items))
            if epoch not in orders:
                orders[epoch] = list(range(len(self.items)))
                random.Random(f"{seed}/epoch{epoch}").shuffle(orders[epoch])
            out.append(self.items[orders[epoch][position]])
        return out

    def reward(self, example: Example, completion: str) -> float:
        return float(self.score(example.prompt, completion, example.answer))


class Lowercase:
    """A format constraint with a graded reward: "Describe the sea in one sentence, in lowercase letters
    only." Reward: the share of the completion's letters that are lowercase (0 without letters)."""

    TOPICS = ("the sea", "a forest", "a city at night", "rain", "a library", "the moon", "a market", "winter",
              "a train station", "a garden", "the desert", "a river", "an old house", "the mountains", "a storm")

    def examples(self, seed: int, step: int, count: int) -> list[Example]:
        rng = _rng(seed, step)
        return [Example(f"Describe {rng.choice(self.TOPICS)} in one sentence, in lowercase letters only.", "")
                for _ in range(count)]

    def reward(self, example: Example, completion: str) -> float:
        letters = [c for c in completion if c.isalpha()]
        return sum(c.islower() for c in letters) / len(letters) if letters else 0.0


TASKS: dict[str, type] = {"arithmetic": Arithmetic, "digits-format": DigitsFormat, "lowercase": Lowercase}


def make_task(name: str | None = None, **params: Any) -> Task:
    """A shipped task by name (:data:`TASKS`), or ``make_task(prompts=PATH, reward=MODULE:FUNCTION)``."""
    if name is None:
        if "prompts" not in params or "reward" not in params:
            raise ValueError("a task needs `name` (one of " + ", ".join(TASKS) + ") or both `prompts` and `reward`")
        return PromptFile(params.pop("prompts"), params.pop("reward"), **params)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; shipped tasks: {', '.join(TASKS)}")
    try:
        return TASKS[name](**params)
    except TypeError as error:
        raise ValueError(f"task {name!r}: {error}") from None


def checked_reward(task: Task, example: Example, completion: str) -> float:
    """The task's reward, which must be a finite number in [0, 1]."""
    value = task.reward(example, completion)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"reward for {example.prompt!r:.60} must be a number in [0, 1], got {value!r}")
    return float(value)
