"""SamplerChain: processors applied in the order given, then a draw."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from transformers import LogitsProcessor

from .draw import Seeds, as_seed_tensor, as_step_tensor, race_draw
from .fused import Draw, process_fused, sample_fused
from .telemetry import measure_step


class SamplerChain(LogitsProcessor):
    """Run logits processors exactly in the given order, then draw one token per row.

    The chain is itself a ``LogitsProcessor`` (so it also plugs into Hugging Face ``generate()``); its
    order is the user's: ``[Temperature(1.5), TopH(0.4)]`` truncates the heated distribution
    (transformers' order), ``[TopH(0.4), Temperature(1.5)]`` heats what the raw distribution kept
    (llama.cpp's order). When every processor has a kernel (all but :class:`Typical` and custom
    processors), the whole chain runs as one fused kernel pass per step (see :mod:`entrodec.kernels`).

    Example:
        >>> import torch
        >>> from entrodec.decoding import SamplerChain, Temperature, MinP
        >>> chain = SamplerChain([Temperature(0.5), MinP(0.1)])
        >>> logits = torch.tensor([[2.0, 1.0, 0.0]])
        >>> chain(None, logits)
        tensor([[4., 2., -inf]])
        >>> draw = chain.sample(None, logits, seeds=0, steps=0)
        >>> int(draw.tokens[0]) in (0, 1), int(draw.telemetry.kept[0])
        (True, 2)
    """

    def __init__(self, processors: Iterable[LogitsProcessor] = ()) -> None:
        self.processors: list[LogitsProcessor] = list(processors)
        for position, processor in enumerate(self.processors):
            if not callable(processor):
                raise TypeError(
                    f"sampler entry {position} must be a logits processor, got {type(processor).__name__}"
                )

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        fused = process_fused(self.processors, input_ids, scores)
        return fused if fused is not None else self._process_each(input_ids, scores)

    def _process_each(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        for processor in self.processors:
            scores = processor(input_ids, scores)
        return scores

    def sample(
        self, input_ids: torch.LongTensor | None, scores: torch.Tensor, seeds: Seeds, steps: int | torch.Tensor = 0
    ) -> Draw:
        """Process ``scores``, draw one token per row keyed by the row's seed and step, and measure the
        step (entropy before/after, kept-set size, log-probabilities, temperature applied)."""
        seeds = as_seed_tensor(seeds, scores.shape[0], "cpu" if scores.is_cpu else scores.device)
        fused = sample_fused(self.processors, input_ids, scores, seeds, steps)
        if fused is not None:
            return fused
        steps = as_step_tensor(steps, scores.shape[0], scores.device)
        processed = self._process_each(input_ids, scores)
        tokens = race_draw(processed, seeds, steps)
        return Draw(tokens, measure_step(scores, processed, tokens, self.applied_temperature(scores.shape[0])))

    def select_rows(self, keep: list[int]) -> None:
        """The batch now holds only the rows at positions ``keep`` (generate() drops finished rows):
        processors with per-row state follow."""
        for processor in self.processors:
            if hasattr(processor, "select_rows"):
                processor.select_rows(keep)

    def applied_temperature(self, batch: int) -> torch.Tensor:
        """The product of the temperatures the chain's processors applied at their last call (``[batch]``,
        1.0 for a chain without temperature)."""
        total = torch.ones(batch)
        for processor in self.processors:
            last = getattr(processor, "last_temperature", None)
            if last is not None:
                total = total * last.float().cpu()
        return total

    def __len__(self) -> int:
        return len(self.processors)

    def __iter__(self) -> Iterator[LogitsProcessor]:
        return iter(self.processors)

    def __repr__(self) -> str:
        return f"SamplerChain([{', '.join(map(repr, self.processors))}])"
