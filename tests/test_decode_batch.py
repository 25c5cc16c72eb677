"""DecodeBatch: rows that join a running batch, or leave it, see exactly what they would see alone."""

import pytest
import torch

from entrodec.decoding.decode_batch import DecodeBatch

pytestmark = pytest.mark.model


def _alone(model, prompt, tokens):
    """Logits after each of ``tokens`` for ``prompt`` decoded by itself."""
    batch = DecodeBatch(model, pad_id=0)
    batch.join([prompt])
    seen = [batch.logits[0].clone()]
    for t in tokens:
        batch.advance([t])
        seen.append(batch.logits[0].clone())
    return seen


def test_rows_joining_and_leaving_match_decoding_alone(tiny_model):
    model, _ = tiny_model
    a, b, c = [5, 6, 7, 8, 9, 10, 11], [20, 21], [30, 31, 32, 33]
    feed = {0: [40, 41, 42, 43, 44], 1: [50, 51, 52], 2: [60, 61, 62]}
    alone = {i: _alone(model, p, feed[i]) for i, p in enumerate([a, b, c])}
    batch = DecodeBatch(model, pad_id=0)
    batch.join([a])
    batch.advance([feed[0][0]])
    batch.join([b, c])  # two rows with shorter prompts join a row already one step in
    got = {0: [batch.logits[0]], 1: [batch.logits[1]], 2: [batch.logits[2]]}
    assert batch.mask.shape[1] == 8 and batch.lengths.tolist() == [8, 2, 4]
    batch.advance([feed[0][1], feed[1][0], feed[2][0]])
    batch.leave([1, 2])  # row a leaves; its columns were the only ones in front, so they are trimmed
    assert batch.mask.shape[1] == 4 + 1 and batch.lengths.tolist() == [3, 5]
    got[1].append(batch.logits[0])
    got[2].append(batch.logits[1])
    batch.advance([feed[1][1], feed[2][1]])
    got[1].append(batch.logits[0])
    got[2].append(batch.logits[1])
    torch.testing.assert_close(got[0][0], alone[0][1], rtol=0, atol=1e-5)
    for i in (1, 2):
        for step, logits in enumerate(got[i]):
            torch.testing.assert_close(logits, alone[i][step], rtol=0, atol=1e-5)


def test_repeats_share_a_prefill_and_leave_empties(tiny_model):
    model, _ = tiny_model
    batch = DecodeBatch(model, pad_id=0)
    batch.join([[3, 4, 5], [6]], repeats=[2, 1])
    assert len(batch) == 3 and batch.lengths.tolist() == [3, 3, 1]
    torch.testing.assert_close(batch.logits[0], batch.logits[1])
    with pytest.raises(ValueError, match="one token per row"):
        batch.advance([1, 2])
    batch.leave([])
    assert len(batch) == 0 and batch.cache is None
    batch.join([[7, 8]])  # an emptied batch starts afresh
    assert len(batch) == 1


def test_only_plain_dynamic_caches_can_be_merged(tiny_model):
    from transformers.cache_utils import DynamicCache

    model, _ = tiny_model
    batch = DecodeBatch(model, pad_id=0)
    batch.join([[3, 4]])
    batch.cache = object.__new__(DynamicCache)  # not a DynamicCache the merge understands
    batch.cache.layers = [object()]
    with pytest.raises(TypeError, match="plain DynamicCache"):
        batch.join([[5]])
