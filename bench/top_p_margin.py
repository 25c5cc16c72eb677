"""How often top-p's target on the kernel benchmark's rows could be certified if the mass before its
histogram bin were taken from the histogram (rough) instead of an exact listing, under several per-token
error bounds. A design check in float64 NumPy, no kernel runs:

    python bench/top_p_margin.py             # the 64 rows of [64, 151936], p = 0.9 (a few seconds)

The walk through the target's bin is certain when the mass before the target lies below ``p·G`` and the
mass through it above, each by the margin: ``p·err(G)`` with an exact head (today's kernel), or
``(1 + p)·err(head) + p·err(tail)`` with a rough one (row_program.top_p_rough's rule).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from kernels import logits

BIN_SCALE = 32.0  # the kernel's histogram: bins of 1/32 scaled nat
# relative error of one token's binned mass, from (row maximum, row minimum, the tokens' gaps x)
BOUNDS: dict[str, Callable[[float, float, np.ndarray], np.ndarray | float]] = {
    # row_program's ROUGH_EPS_TOKEN + ROUGH_EPS_X·s·max|z| for absolute bins (s = 1), widened as there
    "today's bound": lambda m, lo, x: (3e-7 + 2e-7 * max(abs(m), abs(lo))) * 1.001,
    "float32 rounding of 32·s·z only": lambda m, lo, x: 2.0**-24 * max(abs(m), abs(lo)) + 1.6e-7,
    "bins relative to the maximum": lambda m, lo, x: 2.0**-24 * x + 1.6e-7,
}


def certified(row: np.ndarray, p: float, bound, rough_head: bool) -> tuple[bool, float]:
    """Whether the target is certain, and the margin over the target token's mass."""
    m, lo = row.max(), row.min()
    e = np.sort(np.exp(row - m))[::-1]
    x = -np.log(e)
    through = np.cumsum(e)
    a = p * through[-1]
    j = int(np.searchsorted(through, a))
    before = through[j] - e[j]
    bins = np.floor(BIN_SCALE * x)
    head, tail = bins < bins[j], bins > bins[j]
    err_head = float((bound(m, lo, x[head]) * e[head]).sum())
    err_tail = float((bound(m, lo, x[tail]) * e[tail]).sum())
    margin = (1 + p) * err_head + p * err_tail if rough_head else p * err_tail
    return bool(before < a - margin and through[j] >= a + margin), margin / e[j]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="64x151936")
    parser.add_argument("--p", type=float, default=0.9)
    args = parser.parse_args()
    rows = logits(tuple(int(v) for v in args.shape.split("x")), "cpu").double().numpy()
    cases = [("exact head, today's bound on the tail", BOUNDS["today's bound"], False)]
    cases += [(f"rough head, {name}", bound, True) for name, bound in BOUNDS.items()]
    print(f"| head mass, bound | rows certified of {len(rows)} | margin / target token's mass (median, range) |")
    print("|---|---|---|")
    for label, bound, rough in cases:
        results = [certified(row, args.p, bound, rough) for row in tqdm(rows, desc=label, leave=False)]
        ratios = [r for _, r in results]
        print(f"| {label} | {sum(ok for ok, _ in results)} | {np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |",
              flush=True)


if __name__ == "__main__":
    main()
