"""RowSamplers: a different sampler for each row of one batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .chain import SamplerChain
from .fused import Draw, greedy_draw
from .telemetry import StepTelemetry

_FIELDS = ("entropy_before", "entropy_after", "kept", "logprob_before", "logprob_after", "temperature")


class RowSamplers:
    """One sampler per row of a batch: a preset name, a list of processors, a :class:`SamplerChain`, or
    ``None`` for greedy. Rows given the same object share one chain and are sampled together, so a
    batch that mixes a few samplers costs a few chain calls per step, not one per row.

    This is how requests with different settings share one batch (the server), and how a benchmark
    runs every sampler on a prompt while the model reads the prompt once (``generate(..., n=...)``).

    Example:
        >>> import torch
        >>> from entrodec.decoding import RowSamplers, Temperature, TopK
        >>> hot = [Temperature(2.0)]
        >>> rows = RowSamplers([hot, None, hot])           # rows 0 and 2 share a chain; row 1 is greedy
        >>> drawn = rows.sample(None, torch.tensor([[0.0, 5.0], [5.0, 0.0], [0.0, 5.0]]), seeds=[1, 2, 3])
        >>> int(drawn.tokens[1]), len(rows.groups())
        (0, 2)
    """

    def __init__(self, samplers: Sequence[Any]) -> None:
        if isinstance(samplers, (str, SamplerChain)) or not isinstance(samplers, Sequence) or not samplers:
            raise TypeError("`samplers` must be a non-empty list with one sampler (or None) per row")
        self.rows: list[SamplerChain | None] = []
        self.extend(samplers)

    def extend(self, samplers: Sequence[Any]) -> None:
        """Rows joining the batch after the existing ones, one sampler each (the server's new requests)."""
        from .sampler_spec import resolve_sampler

        resolved: dict[int, SamplerChain | None] = {}
        for sampler in samplers:
            if id(sampler) not in resolved:
                resolved[id(sampler)] = resolve_sampler(sampler)
            self.rows.append(resolved[id(sampler)])

    def __len__(self) -> int:
        return len(self.rows)

    def groups(self) -> list[tuple[SamplerChain | None, list[int]]]:
        """``(sampler, rows)`` for each distinct sampler, in order of first appearance."""
        found: dict[int, tuple[SamplerChain | None, list[int]]] = {}
        for row, sampler in enumerate(self.rows):
            found.setdefault(id(sampler), (sampler, []))[1].append(row)
        return list(found.values())

    def sample(self, input_ids, scores: torch.Tensor, seeds, steps=0, lengths: torch.Tensor | None = None) -> Draw:
        """Each group of rows drawn by its own sampler; tokens and telemetry back in row order.

        ``lengths`` (the rows' real token counts, when ``input_ids`` is left-padded for rows that joined
        at different times) trims each group's ``input_ids`` to its own longest row, so processors that
        read them see a history that grows by one token a step."""
        from .draw import as_seed_tensor

        batch = scores.shape[0]
        if batch != len(self.rows):
            raise ValueError(f"RowSamplers holds {len(self.rows)} samplers but the batch has {batch} rows")
        seeds = as_seed_tensor(seeds, batch, scores.device)
        steps = torch.as_tensor(steps, dtype=torch.int64, device=scores.device).expand(batch)
        tokens = torch.empty(batch, dtype=torch.long, device=scores.device)
        columns = {name: torch.empty(batch, dtype=torch.long if name == "kept" else torch.float32) for name in _FIELDS}
        for sampler, rows in self.groups():
            index = torch.tensor(rows, device=scores.device)
            sub = scores[index]
            if sampler is None:
                drawn = greedy_draw(sub)
            else:
                ids = None if input_ids is None else input_ids[index]
                if ids is not None and lengths is not None:
                    ids = ids[:, ids.shape[1] - int(lengths[index.cpu()].max()):]
                drawn = sampler.sample(ids, sub, seeds[index], steps[index])
            tokens[index] = drawn.tokens
            for name in _FIELDS:
                columns[name][index.cpu()] = getattr(drawn.telemetry, name).to(columns[name].dtype)
        return Draw(tokens, StepTelemetry(**columns))

    def select_rows(self, keep: list[int]) -> None:
        """Only the rows at positions ``keep`` remain in the batch; stateful samplers follow."""
        kept = set(keep)
        for sampler, rows in self.groups():
            if sampler is not None:
                sampler.select_rows([position for position, row in enumerate(rows) if row in kept])
        self.rows = [self.rows[k] for k in keep]
