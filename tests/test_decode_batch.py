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
    batch.select([1, 2])  # row a leaves; its columns were the only ones in front, so they are trimmed
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
    batch.select([])
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


def test_forked_rows_continue_exactly_as_recomputed_from_scratch(tiny_model):
    """select() with repeats forks rows: each copy reuses the prefix's cache and then continues on its
    own; greedy, a copy's tokens and logits equal those of the full sequence prefilled afresh."""
    model, _ = tiny_model
    batch = DecodeBatch(model, pad_id=0)
    batch.join([[5, 6, 7, 8], [9, 10]])
    batch.advance([11, 12])
    batch.select([1, 0, 1, 1])  # row 1 forked three times, row 0 once
    assert batch.lengths.tolist() == [3, 5, 3, 3]
    history = [[9, 10, 12], [5, 6, 7, 8, 11], [9, 10, 12], [9, 10, 12]]
    batch.advance([13, 14, 15, 16])  # the copies of row 1 diverge
    for row, token in enumerate([13, 14, 15, 16]):
        history[row].append(token)
    for _ in range(4):  # then greedy
        tokens = batch.logits.argmax(dim=-1).tolist()
        for row, token in enumerate(tokens):
            history[row].append(token)
        batch.advance(tokens)
    for row, tokens in enumerate(history):
        fresh = DecodeBatch(model, pad_id=0)
        fresh.join([tokens])
        torch.testing.assert_close(batch.logits[row], fresh.logits[0], rtol=0, atol=1e-5)


def test_copy_select_and_extend_keep_every_row_intact(tiny_model):
    model, _ = tiny_model
    batch = DecodeBatch(model, pad_id=0)
    batch.join([[5, 6, 7, 8, 9, 10], [11], [12, 13]])
    before = batch.logits.clone()
    twin = batch.copy([2])
    parked = batch.copy([0])  # row 0 is parked out of the batch; rows 1 and 2 stay, in order
    batch.select([1, 2])
    assert len(batch) == 2 and len(parked) == 1 and len(twin) == 1
    assert batch.mask.shape[1] == 2  # the long row's columns left with it
    torch.testing.assert_close(parked.logits[0], before[0])
    batch.advance([20, 21])
    batch.extend(parked)  # back behind the others, left-padded to a common width
    assert batch.lengths.tolist() == [2, 3, 6] and len(parked) == 1
    batch.advance([22, 23, 24])
    for row, tokens in enumerate([[11, 20, 22], [12, 13, 21, 23], [5, 6, 7, 8, 9, 10, 24]]):
        fresh = DecodeBatch(model, pad_id=0)
        fresh.join([tokens])
        torch.testing.assert_close(batch.logits[row], fresh.logits[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(twin.logits[0], before[2])  # a copy is unaffected by the original's steps
    empty = DecodeBatch(model, pad_id=0)
    empty.extend(twin)
    assert len(empty) == 1 and empty.cache is not twin.cache


def test_feed_gives_each_row_its_own_number_of_tokens(tiny_model):
    """Model switching catches rows up on different numbers of missed tokens in one pass: each row's
    logits equal decoding its tokens alone, and a row given nothing keeps its logits."""
    model, _ = tiny_model
    prompts = [[5, 6, 7], [20, 21, 22, 23, 24], [30, 31]]
    runs = [[40, 41, 42], [50], []]
    batch = DecodeBatch(model, pad_id=0)
    batch.join(prompts)
    before = batch.logits.clone()
    batch.feed(runs)
    assert batch.lengths.tolist() == [6, 6, 2]
    for i in (0, 1):
        torch.testing.assert_close(batch.logits[i], _alone(model, prompts[i], runs[i])[-1], rtol=0, atol=1e-5)
    torch.testing.assert_close(batch.logits[2], before[2], rtol=0, atol=0)
    batch.advance([43, 51, 32])  # and ordinary steps continue correctly after the ragged one
    for i, extra in enumerate([43, 51, 32]):
        torch.testing.assert_close(batch.logits[i], _alone(model, prompts[i], runs[i] + [extra])[-1], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="one token list per row: 2 lists for 3 rows"):
        batch.feed([[1], [2]])
