"""Hypothesis strategies for logit matrices: ties, -inf entries, huge values, tiny vocabularies."""

import numpy as np
import torch
from hypothesis import strategies as st

NEG_INF = float("-inf")


@st.composite
def logit_rows(draw, min_vocab: int = 1, max_vocab: int = 48, max_batch: int = 3, allow_inf: bool = True):
    """A ``[batch, vocab]`` float32 tensor with at least one finite entry per row."""
    batch = draw(st.integers(1, max_batch))
    vocab = draw(st.integers(min_vocab, max_vocab))
    scale = draw(st.sampled_from([1.0, 5.0, 30.0, 1e4]))
    style = draw(st.sampled_from(["continuous", "ties", "peaked"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if style == "ties":
        values = rng.choice(rng.normal(size=3) * scale, size=(batch, vocab))
    elif style == "peaked":
        values = rng.normal(size=(batch, vocab))
        values[:, 0] += scale
    else:
        values = rng.normal(size=(batch, vocab)) * scale
    if allow_inf and vocab > 1 and draw(st.booleans()):
        masked = rng.random((batch, vocab)) < draw(st.sampled_from([0.3, 0.9, 1.0]))
        keep = rng.integers(0, vocab, size=batch)
        masked[np.arange(batch), keep] = False  # every row keeps at least one finite logit
        values = np.where(masked, NEG_INF, values)
    return torch.tensor(values, dtype=torch.float32)


probabilities = st.floats(0.01, 0.99, allow_nan=False)
