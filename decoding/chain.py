"""SamplerChain: processors applied in the order given, then a draw."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from transformers import LogitsProcessor

from .draw import sample_logits


class SamplerChain(LogitsProcessor):
    """Run logits processors exactly in the given order, then draw one token per row.

    The chain is itself a ``LogitsProcessor`` (so it also plugs into Hugging Face ``generate()``); its
    order is the user's: ``[Temperature(1.5), TopH(0.4)]`` truncates the heated distribution
    (transformers' order), ``[TopH(0.4), Temperature(1.5)]`` heats what the raw distribution kept
    (llama.cpp's order).

    Example:
        >>> import torch
        >>> from entrodec.decoding import SamplerChain, Temperature, MinP
        >>> chain = SamplerChain([Temperature(0.5), MinP(0.1)])
        >>> logits = torch.tensor([[2.0, 1.0, 0.0]])
        >>> chain(None, logits)
        tensor([[4., 2., -inf]])
        >>> gens = [torch.Generator().manual_seed(0)]
        >>> int(chain.sample(None, logits, gens)[0]) in (0, 1)
        True
    """

    def __init__(self, processors: Iterable[LogitsProcessor] = ()) -> None:
        self.processors: list[LogitsProcessor] = list(processors)
        for position, processor in enumerate(self.processors):
            if not callable(processor):
                raise TypeError(
                    f"sampler entry {position} must be a logits processor, got {type(processor).__name__}"
                )

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        for processor in self.processors:
            scores = processor(input_ids, scores)
        return scores

    def sample(
        self, input_ids: torch.LongTensor | None, scores: torch.Tensor, generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """Process ``scores`` and draw one token per row with the row's own generator."""
        return sample_logits(self(input_ids, scores), generators)

    def __len__(self) -> int:
        return len(self.processors)

    def __iter__(self) -> Iterator[LogitsProcessor]:
        return iter(self.processors)

    def __repr__(self) -> str:
        return f"SamplerChain([{', '.join(map(repr, self.processors))}])"
