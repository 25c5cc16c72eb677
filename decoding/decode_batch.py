"""DecodeBatch: the rows a model decodes together, which may join, leave and fork at step boundaries.

generate() uses it for one batch of prompts (rows leave as they finish); the server uses it for
continuous batching (a request's rows join the running batch after their own prefill); search forks
rows (a resampled particle's copies share its prefix's cache instead of recomputing it). Rows are kept
left-aligned on a shared time axis: a joining group and the running batch are left-padded to the same
width, the padding masked out, so every row sees exactly its own tokens at its own positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from .prompts import left_pad, position_ids


def _is_plain_dynamic(cache) -> bool:
    """A DynamicCache whose layers are all plain (no sliding window, quantisation...): one whose key and
    value tensors may be padded, concatenated and trimmed along the time axis."""
    layers = getattr(cache, "layers", None)
    return isinstance(cache, DynamicCache) and layers is not None and all(type(layer) is DynamicLayer for layer in layers)


def _check_mergeable(cache) -> None:
    if not _is_plain_dynamic(cache):
        raise TypeError(
            f"rows can join a running batch only with a plain DynamicCache; this model uses {type(cache).__name__}"
        )


def _pad_left(tensor: torch.Tensor, width: int, dim: int, value: float = 0) -> torch.Tensor:
    """``tensor`` left-padded along ``dim`` to ``width``."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pads = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return F.pad(tensor, pads, value=value)


class DecodeBatch:
    """KV cache, attention mask, positions and next-token logits of the rows being decoded.

    ``logits`` (``[rows, vocab]``) are each row's next-token logits; ``sequences`` (``[rows, width]``,
    left-padded) are the tokens the rows have seen, for processors that read ``input_ids``; ``lengths``
    are the rows' real token counts.

    Example:
        >>> from entrodec.decoding.decode_batch import DecodeBatch  # doctest: +SKIP
        >>> batch = DecodeBatch(model, pad_id=0)                    # doctest: +SKIP
        >>> batch.join([[1, 2, 3]], repeats=[2])    # doctest: +SKIP
        >>> batch.advance([7, 9]); batch.select([1, 1, 1]); len(batch)  # doctest: +SKIP
        3
    """

    def __init__(self, model, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.cache = None
        self.sequences = self.mask = self.positions = self.logits = None
        self.lengths = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return 0 if self.logits is None else self.logits.shape[0]

    @torch.inference_mode()
    def join(self, prompts: Sequence[Sequence[int]], repeats: Sequence[int] | None = None) -> None:
        """Prefill ``prompts`` (token id lists) in one forward pass and append their rows, ``repeats[i]``
        rows for prompt ``i`` (they share its prefill); the new rows come after the existing ones."""
        sequences, mask = left_pad(prompts, self.pad_id, self.device)
        positions = position_ids(mask)
        out = self.model(
            input_ids=sequences, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
        )
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        positions = positions[:, -1:]
        if repeats is not None and any(r != 1 for r in repeats):
            index = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(list(repeats)))
            cache.batch_select_indices(index.to(self.device))
            lengths = lengths[index]
            index = index.to(self.device)
            sequences, mask, positions, logits = (t[index] for t in (sequences, mask, positions, logits))
        if self.cache is None:
            self.cache, self.sequences, self.mask, self.positions, self.logits = cache, sequences, mask, positions, logits
            self.lengths = lengths
            return
        self._merge(cache, sequences, mask, positions, logits, lengths)

    def _merge(self, cache, sequences, mask, positions, logits, lengths) -> None:
        _check_mergeable(self.cache)
        _check_mergeable(cache)
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, width, -2), _pad_left(theirs.keys, width, -2)])
            mine.values = torch.cat([_pad_left(mine.values, width, -2), _pad_left(theirs.values, width, -2)])
        self.sequences = torch.cat([_pad_left(self.sequences, width, 1, self.pad_id), _pad_left(sequences, width, 1, self.pad_id)])
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self.positions = torch.cat([self.positions, positions])
        self.logits = torch.cat([self.logits, logits])
        self.lengths = torch.cat([self.lengths, lengths])
        self._trim()

    def extend(self, other: DecodeBatch) -> None:
        """Append ``other``'s rows after this batch's own (``other`` is left as it was)."""
        if len(other) == 0:
            return
        if len(self) == 0:
            copied = other.copy()
            self.cache, self.sequences, self.mask, self.positions, self.logits, self.lengths = (
                copied.cache, copied.sequences, copied.mask, copied.positions, copied.logits, copied.lengths,
            )
            return
        self._merge(other.cache, other.sequences, other.mask, other.positions, other.logits, other.lengths)

    def select(self, rows: Sequence[int]) -> None:
        """Keep the rows at positions ``rows``, in that order; the others leave the batch and its cache.
        A position may repeat: its copies share the prefix's cache (nothing is recomputed) and continue
        independently."""
        if len(rows) == len(self) and list(rows) == list(range(len(self))):
            return
        if len(rows) == 0:
            self.__init__(self.model, self.pad_id)
            return
        index = torch.tensor(list(rows), device=self.device)
        self.cache.batch_select_indices(index)
        self.sequences, self.mask, self.positions, self.logits = (
            t[index] for t in (self.sequences, self.mask, self.positions, self.logits)
        )
        self.lengths = self.lengths[index.cpu()]
        self._trim()

    def copy(self, rows: Sequence[int] | None = None) -> DecodeBatch:
        """A new batch holding copies of the rows at positions ``rows`` (all rows by default); this
        batch is left as it was."""
        _check_mergeable(self.cache)
        index = torch.arange(len(self), device=self.device) if rows is None else torch.tensor(list(rows), device=self.device)
        twin = DecodeBatch(self.model, self.pad_id)
        twin.cache = DynamicCache(ddp_cache_data=[(layer.keys[index], layer.values[index]) for layer in self.cache.layers])
        twin.sequences, twin.mask, twin.positions, twin.logits = (
            t[index] for t in (self.sequences, self.mask, self.positions, self.logits)
        )
        twin.lengths = self.lengths[index.cpu()]
        twin._trim()
        return twin

    def _trim(self) -> None:
        """Drop leading columns that are padding in every row (left by rows that left), so long-running
        batches do not carry dead cache."""
        dead = int((self.mask.cumsum(dim=1) == 0).sum(dim=1).min())
        if dead == 0 or not _is_plain_dynamic(self.cache):
            return
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, dead:, :], layer.values[:, :, dead:, :]
        self.sequences, self.mask = self.sequences[:, dead:], self.mask[:, dead:]

    def advance(self, tokens: Sequence[int]) -> None:
        """Feed one new token per row and compute the next logits."""
        if len(tokens) != len(self):
            raise ValueError(f"advance() needs one token per row: {len(tokens)} tokens for {len(self)} rows")
        self.feed([[token] for token in tokens])

    @torch.inference_mode()
    def feed(self, tokens: Sequence[Sequence[int]]) -> None:
        """Feed each row its own new tokens in one forward pass and compute the next logits.

        Rows may get different numbers of tokens (model switching catches a row up on the tokens it
        missed while others take one): shorter runs are padded before their tokens and the padding is
        masked out, so every row still sees exactly its own tokens at its own positions. A row given
        no tokens keeps its logits. ``sequences`` then holds that padding inside a row."""
        if len(tokens) != len(self):
            raise ValueError(f"feed() needs one token list per row: {len(tokens)} lists for {len(self)} rows")
        counts = torch.tensor([len(run) for run in tokens], dtype=torch.long)
        if int(counts.max()) == 0:
            return
        if bool((counts == counts[0]).all()):  # the usual decoding step: no padding to build
            new_tokens = torch.tensor([list(run) for run in tokens], dtype=torch.long, device=self.device)
            new_mask = torch.ones_like(new_tokens)
        else:
            new_tokens, new_mask = left_pad(tokens, self.pad_id, self.device)
        # Padding takes the row's last position: it is masked, so the value only has to be valid.
        positions = self.positions + new_mask.cumsum(dim=1)
        self.sequences = torch.cat([self.sequences, new_tokens], dim=1)
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        self.lengths = self.lengths + counts
        out = self.model(
            input_ids=new_tokens, attention_mask=self.mask, position_ids=positions,
            past_key_values=self.cache, use_cache=True, logits_to_keep=1,
        )
        self.cache = out.past_key_values
        self.positions = positions[:, -1:]
        fed = (counts > 0).to(self.device)
        logits = out.logits[:, -1, :]
        self.logits = logits if bool(fed.all()) else torch.where(fed[:, None], logits, self.logits)
