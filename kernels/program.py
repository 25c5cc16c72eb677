"""What a sampler chain compiles to for the kernels: op codes, their parameter slots, the run modes and
the per-row telemetry layout. Shared by the CPU and CUDA backends and by the torch-facing launcher.

A program is ``ops`` (int64 ``[n_ops]``, the same for every row) and ``params`` (float64
``[batch, n_ops, SLOTS]``, one set of parameters per row), applied in order to each row of logits.
"""

from __future__ import annotations

SLOTS = 8

# Op codes and their parameter slots (slot 0 first).
TEMPERATURE = 1   # T
DYNATEMP = 2      # T0, range Δ, exponent e
EDT = 3           # T0, theta, base
HAPO = 4          # T0, tau, has_statistics (0/1), pivot, spread, scale_pos, scale_neg
TOP_K = 5         # k, min_tokens_to_keep
TOP_P = 6         # p, min_tokens_to_keep
MIN_P = 7         # min_p, min_tokens_to_keep
TOP_H = 8         # alpha, min_tokens_to_keep      (the paper's rule)
TOP_H_HF = 9      # alpha, min_tokens_to_keep      (transformers' rule)
EPSILON = 10      # epsilon, min_tokens_to_keep
ETA = 11          # epsilon, min_tokens_to_keep
TOP_N_SIGMA = 12  # n, min_tokens_to_keep

OP_NAMES = {
    TEMPERATURE: "temperature", DYNATEMP: "dynatemp", EDT: "edt", HAPO: "hapo", TOP_K: "top_k", TOP_P: "top_p",
    MIN_P: "min_p", TOP_H: "top_h", TOP_H_HF: "top_h_hf", EPSILON: "epsilon", ETA: "eta", TOP_N_SIGMA: "top_n_sigma",
}

# Run modes (bit flags).
DRAW = 1        # draw one token per row (exponential race keyed by seed and step)
TELEMETRY = 2   # entropy before/after, kept-set size, log-probabilities of the drawn token
WRITE = 4       # write the processed logits (what the chain's __call__ returns)
FLOAT32_PARAMS = 8  # temperatures and epsilons act as float32, as in the torch reference for non-float64 logits

# Telemetry columns (float64 ``[batch, FIXED + 2·n_ops]``).
T_TOKEN = 0         # the token drawn; 0 for a row with no finite logit (see T_STATUS)
T_H_BEFORE = 1
T_H_AFTER = 2
T_KEPT = 3
T_LOGP_BEFORE = 4
T_LOGP_AFTER = 5
T_TEMPERATURE = 6   # product of the temperatures applied
T_STATUS = 7        # 0 ok, STATUS_EMPTY: the row had no finite logit
FIXED = 8
STATUS_EMPTY = 1


def op_temperature_column(op_index: int) -> int:
    """Telemetry column holding the temperature op ``op_index`` applied (NaN for other ops)."""
    return FIXED + 2 * op_index


def op_entropy_column(op_index: int) -> int:
    """Telemetry column holding the entropy op ``op_index`` saw (entropy-adaptive temperatures)."""
    return FIXED + 2 * op_index + 1


def telemetry_width(n_ops: int) -> int:
    return FIXED + 2 * n_ops
