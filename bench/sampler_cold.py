"""The sampler step with warm and with cold caches: ``sample()`` against the kernel call inside it.

Inside ``generate()`` every step's sampler runs right after the model's forward pass, which has
streamed the weights through every cache: each line of Python and each torch or NumPy routine then
runs cold, at several times its warm price. This benchmark captures real logits rows from the default
model (T 1.5, batch 1), then times ``SamplerChain.sample()`` on them per chain, warm and after reading
64 MB (which evicts the caches as a forward pass does), and splits each step into the kernel call and
everything around it.

    python bench/sampler_cold.py                 # prints a table; bench/out/sampler_cold.{json,png}
    python bench/sampler_cold.py --rows 16 --repeats 2

To compare two revisions, run it in a worktree of each, alternating (the machine's speed drifts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import entrodec.kernels.cpu as cpu
from entrodec.decoding import EntropyTemperature, MinP, SamplerChain, Temperature, TopH, TopP, generate, load_model

CHAINS = {
    "top-p 0.9": lambda: [Temperature(1.5), TopP(0.9)],
    "min-p 0.1": lambda: [Temperature(1.5), MinP(0.1)],
    "Top-H 0.4 (paper)": lambda: [Temperature(1.5), TopH(0.4)],
    "Top-H 0.4 (hf)": lambda: [Temperature(1.5), TopH(0.4, rule="hf")],
    "dynatemp": lambda: [EntropyTemperature("dynatemp", temperature=1.5, dynatemp_range=0.75)],
    "EDT": lambda: [EntropyTemperature("edt", temperature=1.5, theta=0.2)],
    "temperature": lambda: [Temperature(1.5)],
}
FLUSH_BYTES = 64 << 20


class Capture(SamplerChain):
    """T 1.5 → Top-H 0.4 that keeps a copy of every row it samples from."""

    def __init__(self) -> None:
        super().__init__([Temperature(1.5), TopH(0.4)])
        self.rows: list[torch.Tensor] = []

    def sample(self, input_ids, scores, seeds, steps=0):
        self.rows.append(scores.clone())
        return super().sample(input_ids, scores, seeds, steps)


def capture_rows(count: int) -> list[torch.Tensor]:
    model, tok = load_model()
    chain = Capture()
    generate(model, tok, ["Write a short story about a lighthouse keeper."], sampler=chain, chat=True,
             max_new_tokens=count, seed=0, ignore_eos=True)
    return chain.rows[:count]


def time_chain(name: str, rows: list[torch.Tensor], repeats: int, flush: np.ndarray) -> dict:
    kernel_seconds: list[float] = []
    run_one = cpu.COMPILED["run_one"]

    def timed_kernel(*args):
        started = time.perf_counter()
        run_one(*args)
        kernel_seconds.append(time.perf_counter() - started)

    chain = SamplerChain(CHAINS[name]())
    seeds = torch.zeros(1, dtype=torch.int64)
    result = {"chain": name}
    cpu.COMPILED["run_one"] = timed_kernel
    try:
        for step, row in enumerate(rows):  # warm-up
            chain.sample(None, row, seeds, step)
        for state in ("warm", "cold"):
            whole, kernel_seconds[:] = [], []
            for _ in range(repeats):
                for step, row in enumerate(rows):
                    if state == "cold":
                        flush.sum()
                    started = time.perf_counter()
                    chain.sample(None, row, seeds, step)
                    whole.append(time.perf_counter() - started)
            result[f"{state}_sample_ms"] = statistics.median(whole) * 1e3
            result[f"{state}_kernel_ms"] = statistics.median(kernel_seconds) * 1e3
            result[f"{state}_outside_ms"] = statistics.median(w - k for w, k in zip(whole, kernel_seconds)) * 1e3
    finally:
        cpu.COMPILED["run_one"] = run_one
    return result


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["chain"] for r in results]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for offset, state in ((-0.2, "warm"), (0.2, "cold")):
        kernel = [r[f"{state}_kernel_ms"] for r in results]
        outside = [r[f"{state}_outside_ms"] for r in results]
        ax.bar(x + offset, kernel, 0.38, label=f"{state}: kernel call", color="tab:blue" if state == "warm" else "tab:cyan")
        ax.bar(x + offset, outside, 0.38, bottom=kernel, label=f"{state}: Python around it",
               color="tab:orange" if state == "warm" else "tab:red")
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("ms per sample() (median)")
    ax.set_title("Sampler step at batch 1, vocabulary 49,152: warm caches vs after a 64 MB read")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="logits rows to capture from the default model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    print("capturing logits rows from the default model...", file=sys.stderr)
    rows = capture_rows(args.rows)
    flush = np.ones(FLUSH_BYTES // 8)
    results = [time_chain(name, rows, args.repeats, flush) for name in tqdm(CHAINS, desc="chains", unit="chain")]
    print(f"\n{len(rows)} rows of vocabulary {rows[0].shape[1]}, medians of {args.repeats} passes")
    print("| chain | warm: sample() ms | warm: kernel | warm: around it | cold: sample() ms | cold: kernel | cold: around it |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['chain']} | {r['warm_sample_ms']:.3f} | {r['warm_kernel_ms']:.3f} | {r['warm_outside_ms']:.3f} | "
              f"{r['cold_sample_ms']:.3f} | {r['cold_kernel_ms']:.3f} | {r['cold_outside_ms']:.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sampler_cold.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "sampler_cold.png")
    print(f"plot: {args.out / 'sampler_cold.png'}")


if __name__ == "__main__":
    main()
