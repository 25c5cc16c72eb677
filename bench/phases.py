"""How the machine's speed drifts while the kernels' ratio to the one-read floor is measured.

    python bench/phases.py                      # 90 s, top-p at [64, 151936]
    python bench/phases.py --seconds 300 --chain "Top-H paper 0.4"

Calls six workloads round-robin for ``--seconds`` and prints, per window of ``--window`` seconds, the
median of each: one of bench/kernels.py's chains (the fused kernel, draw only) on all of Numba's threads
and on one, the floor (NumPy's max over the same array: memory-bound, one thread), a latency-bound
integer chain (each step waits on the last: it only slows with the clock) and a throughput-bound vector
loop on data in L1 (it also slows when another thread competes for the core's execution units); those
three run on the calling thread. A sixth runs the same vector loop on every thread at once, each on its
own copy: its *scaling* (threads × one copy's time / this time) is how much faster the machine runs
throughput-bound work on all threads than on one, at that moment, and the kernel's own scaling (its
one-thread time / its time) is printed beside it. Writes ``phases.{json,png}`` to ``--out``.

Why: on a shared machine a single run's "vs floor" ratio moves with the phase it was taken in. Seeing
which workloads move together tells a slower kernel from a faster floor, a lower clock from a busier
core, and cores that share execution units (the parallel call alone slows) from a slow machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numba
import numpy as np
import torch

from kernels import CHAINS, logits, make_runners, one_call


@numba.njit(cache=True)
def integer_chain(steps: int, a: int, b: int) -> int:
    for _ in range(steps):  # two dependent one-cycle operations a step
        a = a + b
        b = b ^ a
    return a


@numba.njit(cache=True, fastmath=True)
def vector_loop(x: np.ndarray, repeats: int) -> float:
    total = 0.0
    for _ in range(repeats):
        acc = np.float32(0.0)
        for j in range(x.shape[0]):  # independent lanes: bound by the execution units, not by latency
            acc += x[j] * np.float32(1.0001) + np.float32(0.5)
        total += acc
    return total


@numba.njit(parallel=True, cache=True)
def vector_loop_parallel(xs: np.ndarray, repeats: int) -> float:
    totals = np.zeros(xs.shape[0])
    for t in numba.prange(xs.shape[0]):  # one copy per thread: the same work as vector_loop, on each
        totals[t] = vector_loop(xs[t], repeats)
    return totals.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90.0, help="how long to run (> 0)")
    parser.add_argument("--window", type=float, default=3.0, help="seconds per reported median (> 0)")
    parser.add_argument("--shape", default="64x151936", help="logits shape, e.g. 8x49152")
    parser.add_argument("--chain", default="T 1.0, top-p 0.9", choices=sorted(CHAINS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    if not (args.seconds > 0 and args.window > 0):
        parser.error(f"--seconds and --window must be > 0, got {args.seconds} and {args.window}")
    shape = tuple(int(v) for v in args.shape.split("x"))
    torch.set_num_threads(torch.get_num_threads())

    z = logits(shape, "cpu")
    array = z.numpy()
    x = np.random.default_rng(0).random(4096).astype(np.float32)
    kernel = make_runners(args.chain, z, torch.arange(shape[0]))["entrodec"]
    threads = numba.get_num_threads()
    xs = np.tile(x, (threads, 1))

    def kernel_one_thread() -> None:
        numba.set_num_threads(1)
        try:
            kernel()
        finally:
            numba.set_num_threads(threads)

    workloads = {
        "kernel": kernel,
        "kernel, 1 thread": kernel_one_thread,
        "floor": lambda: np.max(array),
        "latency-bound": lambda: integer_chain(3_000_000, 1, 3),
        "throughput-bound": lambda: vector_loop(x, 600),
        f"throughput, {threads} threads": lambda: vector_loop_parallel(xs, 600),
    }
    for fn in workloads.values():  # compile or load, and warm up
        fn()

    windows = []
    end = time.monotonic() + args.seconds
    print(f"{args.chain} at {args.shape}; medians (ms) per {args.window:g} s window")
    print(f"kernel: {threads} threads")
    print("  t (s)  " + "  ".join(f"{k:>16}" for k in workloads) + "  kernel/floor  scaling: vector  kernel")
    started = time.monotonic()
    while time.monotonic() < end:
        times = {k: [] for k in workloads}
        window_end = time.monotonic() + args.window
        while time.monotonic() < window_end:
            for name, fn in workloads.items():
                times[name].append(one_call(fn, "cpu"))
        medians = {k: statistics.median(v) for k, v in times.items()}
        windows.append(dict(t=time.monotonic() - started, seconds=medians, scaling=scalings(medians, threads)))
        print(f"{windows[-1]['t']:7.1f}  " + "  ".join(f"{v * 1e3:16.3f}" for v in medians.values())
              + f"  {medians['kernel'] / medians['floor']:12.2f}  {windows[-1]['scaling']['vector']:14.2f}"
              f"  {windows[-1]['scaling']['kernel']:6.2f}", flush=True)

    ratios = [w["seconds"]["kernel"] / w["seconds"]["floor"] for w in windows]
    print(f"kernel/floor over {len(windows)} windows: {min(ratios):.2f}-{max(ratios):.2f} (median {statistics.median(ratios):.2f})")
    vector = [w["scaling"]["vector"] for w in windows]
    ours = [w["scaling"]["kernel"] for w in windows]
    print(f"scaling on {threads} threads, vector loop: {min(vector):.2f}-{max(vector):.2f}; kernel: "
          f"{min(ours):.2f}-{max(ours):.2f}")
    if len(windows) > 2:
        print(f"correlation of kernel/floor with the vector loop's scaling: {np.corrcoef(ratios, vector)[0, 1]:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    result = dict(chain=args.chain, shape=list(shape), window_s=args.window, threads=threads, windows=windows)
    (args.out / "phases.json").write_text(json.dumps(result, indent=2))
    plot(windows, args.out / "phases.png", f"{args.chain} at {args.shape}")


def scalings(medians: dict[str, float], threads: int) -> dict[str, float]:
    """How much faster all threads ran than one: the vector loop's copies (``threads`` of them at once against
    one alone) and the kernel (its whole batch on all threads against one)."""
    return dict(vector=threads * medians["throughput-bound"] / medians[f"throughput, {threads} threads"],
                kernel=medians["kernel, 1 thread"] / medians["kernel"])


def plot(windows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [w["t"] for w in windows]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for name in windows[0]["seconds"]:
        series = np.array([w["seconds"][name] for w in windows])
        top.plot(t, series / np.median(series), label=name)
    top.set_ylabel("window median / run median")
    top.legend(fontsize=8)
    top.set_title(title)
    for name in windows[0]["scaling"]:
        middle.plot(t, [w["scaling"][name] for w in windows], label=f"{name}, all threads against one")
    middle.set_ylabel("scaling")
    middle.legend(fontsize=8)
    bottom.plot(t, [w["seconds"]["kernel"] / w["seconds"]["floor"] for w in windows], color="black")
    bottom.set_ylabel("kernel / floor")
    bottom.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
