"""SwitchingBatch: the rows of a switched generation, decoded by two models whose caches stay correct.

Each model keeps two :class:`DecodeBatch` es: ``running`` (rows whose logits it computes every step)
and ``parked`` (rows it holds a cache for but does not read). When a row's rule hands it to a model,
the row moves from that model's parked batch to its running batch and, in the step's one forward
pass, consumes every token it missed; the other model parks it. A model meets a row for the first time
with one prefill of the whole sequence. So each model's cache always holds exactly the row's tokens,
and each token comes from the active model's logits given the full prefix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .decode_batch import DecodeBatch
from .entropy import entropy
from .prompts import left_pad
from .result import RowSwitching
from .switch import LARGE, SMALL, ModelSwitch, RowRule, parameter_count


class _Lane:
    """One model's view of the rows: which it runs, which it parks, and how many tokens it has read."""

    def __init__(self, model, pad_id: int) -> None:
        self.running, self.parked = DecodeBatch(model, pad_id), DecodeBatch(model, pad_id)
        self.running_ids: list[int] = []
        self.parked_ids: list[int] = []
        self.seen: dict[int, int] = {}  # row -> tokens its cache holds

    def _move(self, rows: list[int], source: DecodeBatch, source_ids: list[int], target: DecodeBatch,
              target_ids: list[int]) -> None:
        if not rows:
            return
        leaving = set(rows)
        target.extend(source.copy([source_ids.index(r) for r in rows]))
        target_ids.extend(rows)
        source.select([k for k, r in enumerate(source_ids) if r not in leaving])
        source_ids[:] = [r for r in source_ids if r not in leaving]

    def route(self, need: list[int], tokens: dict[int, list[int]], prompt_length: dict[int, int],
              stats: dict[int, RowSwitching], name: str) -> None:
        """Make ``need`` the running rows, each having read every token of ``tokens``."""
        wanted = set(need)
        self._move([r for r in self.running_ids if r not in wanted], self.running, self.running_ids,
                   self.parked, self.parked_ids)
        parked = set(self.parked_ids)
        self._move([r for r in need if r in parked], self.parked, self.parked_ids, self.running, self.running_ids)
        fresh = [r for r in need if r not in self.seen]
        if self.running_ids:
            runs = [tokens[r][self.seen[r]:] for r in self.running_ids]
            self.running.feed(runs)
            for r, run in zip(self.running_ids, runs):
                if run:
                    stats[r].positions[name] += len(run)
                    stats[r].catch_up_tokens[name] += len(run) - 1
                    stats[r].passes[name] += 1
        if fresh:  # first sight of these rows: a prefill of prompt and generated text together
            self.running.join([tokens[r] for r in fresh])
            self.running_ids.extend(fresh)
            for r in fresh:
                generated = len(tokens[r]) - prompt_length[r]
                stats[r].positions[name] += 1 + generated
                stats[r].catch_up_tokens[name] += max(generated - 1, 0)
                stats[r].passes[name] += 1
        for r in self.running_ids:
            self.seen[r] = len(tokens[r])

    def keep(self, rows: set[int]) -> None:
        """Forget every row not in ``rows``."""
        for batch, ids in ((self.running, self.running_ids), (self.parked, self.parked_ids)):
            if any(r not in rows for r in ids):
                batch.select([k for k, r in enumerate(ids) if r in rows])
                ids[:] = [r for r in ids if r in rows]

    def logits(self, rows: list[int]) -> torch.Tensor:
        at = {r: k for k, r in enumerate(self.running_ids)}
        index = torch.tensor([at[r] for r in rows], dtype=torch.long, device=self.running.device)
        return self.running.logits.index_select(0, index)


class SwitchingBatch:
    """The :class:`DecodeBatch` interface ``generate()`` needs (``join``, ``logits``, ``sequences``,
    ``advance``, ``select``) over a large model and ``switch.small_model``."""

    def __init__(self, large_model, switch: ModelSwitch, pad_id: int) -> None:
        self.switch = switch
        self.pad_id = pad_id
        self.lanes = {SMALL: _Lane(switch.small_model, pad_id), LARGE: _Lane(large_model, pad_id)}
        self.parameters = {SMALL: parameter_count(switch.small_model), LARGE: parameter_count(large_model)}
        self.device = self.lanes[LARGE].running.device
        self.rows: list[int] = []  # live rows, in the order generate() sees them
        self.tokens: dict[int, list[int]] = {}
        self.prompt_length: dict[int, int] = {}
        self.rules: dict[int, RowRule] = {}
        self.stats: dict[int, RowSwitching] = {}
        self.logits: torch.Tensor | None = None
        self._sequences: torch.Tensor | None = None
        self._observed = False  # observe() has recorded this step's tokens

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sequences(self) -> torch.Tensor:
        """The live rows' tokens, left-padded (built only when a processor reads ``input_ids``)."""
        if self._sequences is None:
            self._sequences = left_pad([self.tokens[r] for r in self.rows], self.pad_id, self.device)[0]
        return self._sequences

    @torch.inference_mode()
    def join(self, prompts: Sequence[Sequence[int]], repeats: Sequence[int] | None = None) -> None:
        """Prefill ``prompts`` with the small model (``repeats[i]`` rows for prompt ``i``) and give each
        new row its first model."""
        repeats = list(repeats) if repeats is not None else [1] * len(prompts)
        new = list(range(len(self.tokens), len(self.tokens) + sum(repeats)))
        small = self.lanes[SMALL]
        small.running.join(prompts, repeats)
        small.running_ids.extend(new)
        first_entropy = self._bits(small.logits(new))
        for r, prompt, bits in zip(new, (p for p, k in zip(prompts, repeats) for _ in range(k)), first_entropy):
            self.tokens[r] = list(prompt)
            self.prompt_length[r] = small.seen[r] = len(prompt)
            self.stats[r] = RowSwitching(parameters=dict(self.parameters))
            self.stats[r].positions[SMALL] += 1
            self.stats[r].passes[SMALL] += 1
            self.rules[r] = RowRule(self.switch, self.switch.first_model(bits))
        self.rows.extend(new)
        self._route()

    @torch.inference_mode()
    def observe(self, tokens: Sequence[int], entropy_nats: torch.Tensor | None = None) -> None:
        """Record the token drawn for every live row (which model wrote it, the rolling entropy) and
        apply the switching rule; called before finished rows leave, so their last token counts too.
        ``entropy_nats``: the step telemetry's ``entropy_before`` (the entropy of :attr:`logits`), so the
        active model's entropy is not computed twice."""
        if len(tokens) != len(self.rows):
            raise ValueError(f"observe() needs one token per row: {len(tokens)} tokens for {len(self.rows)} rows")
        if self.switch.entropy_of == SMALL:
            bits = self._bits(self.lanes[SMALL].logits(self.rows))
        elif entropy_nats is not None:
            bits = (entropy_nats / math.log(2)).tolist()
        else:
            bits = self._bits(self.logits)
        for r, token, row_bits in zip(self.rows, tokens, bits):
            stats, rule = self.stats[r], self.rules[r]
            stats.models.append(rule.active)
            stats.rolling_entropy_bits.append(rule.observe(row_bits))
            self.tokens[r].append(int(token))
        self._observed = True

    @torch.inference_mode()
    def advance(self, tokens: Sequence[int]) -> None:
        """Feed each live row its token (recorded by :meth:`observe` unless it already was) to the
        model that writes the row's next token, catching that model up first, and gather the logits."""
        if not self._observed:
            self.observe(tokens)
        elif any(self.tokens[r][-1] != t for r, t in zip(self.rows, tokens)) or len(tokens) != len(self.rows):
            raise ValueError("advance() got other tokens than observe() recorded for the live rows")
        self._observed = False
        self._route()

    @torch.inference_mode()
    def select(self, rows: Sequence[int]) -> None:
        """Keep the live rows at positions ``rows`` (finished rows leave both models' caches)."""
        self.rows = [self.rows[k] for k in rows]
        alive = set(self.rows)
        if len(alive) != len(self.rows):
            raise ValueError("a switched batch cannot fork rows: positions in `rows` must be distinct")
        for lane in self.lanes.values():
            lane.keep(alive)
        if self._observed:  # the rule may have moved rows to a model that has not read their token yet
            self.logits = self._sequences = None
        else:
            self._gather()

    def report(self) -> list[RowSwitching]:
        """Each row's switching telemetry, in the order the rows joined."""
        return [self.stats[r] for r in sorted(self.stats)]

    def _route(self) -> None:
        by_entropy = self.switch.entropy_of == SMALL
        for name, lane in self.lanes.items():
            need = [r for r in self.rows if self.rules[r].active == name or (by_entropy and name == SMALL)]
            lane.route(need, self.tokens, self.prompt_length, self.stats, name)
        self._gather()

    def _gather(self) -> None:
        """Each live row's next-token logits from its active model, in ``rows`` order."""
        self._sequences = None
        if not self.rows:
            self.logits = None
            return
        parts, order = [], []
        for name, lane in self.lanes.items():
            mine = [r for r in self.rows if self.rules[r].active == name]
            if mine:
                parts.append(lane.logits(mine))
                order.extend(mine)
        dtype = torch.promote_types(*(p.dtype for p in parts)) if len(parts) == 2 else parts[0].dtype
        logits = torch.cat([p.to(dtype) for p in parts])
        at = {r: k for k, r in enumerate(order)}
        self.logits = logits.index_select(0, torch.tensor([at[r] for r in self.rows], device=logits.device))

    @staticmethod
    def _bits(logits: torch.Tensor) -> list[float]:
        return (entropy(logits) / math.log(2)).tolist()
