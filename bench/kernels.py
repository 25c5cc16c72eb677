"""Sampling kernels against transformers and plain torch, side by side in one process.

    python bench/kernels.py                  # CPU (writes bench/out/kernels_cpu.{json,png})
    python bench/kernels.py --device cuda    # GPU (writes bench/out/kernels_cuda.{json,png})

For each logits shape and chain, the time of one sampling step (process + draw), median of repeats
after a warm-up, for the following. Our two calls and the floor's are interleaved, so that their ratio
is taken in one state of the machine, which drifts; the competitors' calls are interleaved apart (2 of
each at the CPU's two largest shapes, where they take seconds):

- ``entrodec``: the fused kernel, draw only (``mode=DRAW``: what transformers' loop needs);
- ``entrodec+telemetry``: the same pass also reporting entropy before/after, kept-set size and
  log-probabilities (what generate() uses);
- ``torch reference``: our processors with the kernels switched off, then the same race draw (Top-H's
  paper rule here is the sort-based implementation);
- ``transformers``: its warpers, then ``softmax`` + ``torch.multinomial``, as its sampling loop does;
- ``one read``: the floor — a NumPy ``max`` over the same array on the CPU; on the GPU a torch ``amax``
  and the HBM bound (bytes / measured copy bandwidth).

The first call of the kernel in the process (loading Numba's cache or compiling) is timed separately.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopPLogitsWarper,
)

import entrodec.kernels
from entrodec.decoding import MinP, SamplerChain, Temperature, TopH, TopP
from entrodec.decoding.draw import race_draw
from entrodec.decoding.fused import kernel_program
from entrodec.kernels import program

SHAPES = [(1, 49152), (8, 49152), (64, 151936), (256, 151936)]
CHAINS = {
    "Top-H paper 0.4": (lambda: [TopH(0.4)], lambda: [TopHLogitsWarper(0.4)]),
    "Top-H hf 0.4": (lambda: [TopH(0.4, rule="hf")], lambda: [TopHLogitsWarper(0.4)]),
    "T 1.0, min-p 0.1": (lambda: [Temperature(1.0), MinP(0.1)], lambda: [TemperatureLogitsWarper(1.0), MinPLogitsWarper(0.1)]),
    "T 1.0, top-p 0.9": (lambda: [Temperature(1.0), TopP(0.9)], lambda: [TemperatureLogitsWarper(1.0), TopPLogitsWarper(0.9)]),
}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one warm-up call)."""
    return timed_together({"fn": fn}, device, repeats)["fn"]


def timed_together(fns: dict[str, Callable[[], object]], device: str, repeats: int) -> dict[str, float]:
    """Median seconds of ``repeats`` calls of each function (after one warm-up call each), the calls
    interleaved round-robin with the order rotating every round: this machine drifts between phases
    that change every timing by 20-40%, and a ratio of medians taken minutes apart would carry that
    drift; taken together, both sides see the same phases."""
    for fn in fns.values():
        fn()
    synchronize(device)
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        turn = round_ % len(names)
        for name in names[turn:] + names[:turn]:
            times[name].append(one_call(fns[name], device))
    return {name: statistics.median(values) for name, values in times.items()}


def one_call(fn, device: str) -> float:
    """Seconds of one call, on the GPU by its events (the launch queue drained first)."""
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def logits(shape, device: str) -> torch.Tensor:
    """LM-like rows: a Gaussian bulk (σ = 2.5) with a few strong candidates per row."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(shape, generator=g) * 2.5
    z[:, :8] += torch.rand(shape[0], 8, generator=g) * 8
    return z.to(device)


def make_runners(name: str, z: torch.Tensor, seeds: torch.Tensor):
    ours, theirs = CHAINS[name]
    chain = SamplerChain(ours())
    warpers = theirs()
    codes, params = kernel_program(chain.processors, None, z)
    steps = torch.zeros_like(seeds)

    def fused(mode):
        return lambda: entrodec.kernels.run_program(z, codes, params, mode, seeds, steps)

    def reference():
        with entrodec.kernels.use_kernels(False):
            return race_draw(chain(None, z), seeds, 0)

    def transformers():
        scores = z
        for warper in warpers:
            scores = warper(None, scores)
        return torch.multinomial(torch.softmax(scores, dim=-1), 1)

    return {
        "entrodec": fused(program.DRAW),
        "entrodec+telemetry": fused(program.DRAW | program.TELEMETRY),
        "torch reference": reference,
        "transformers": transformers,
    }


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a device-to-device copy (read + write), the HBM ceiling."""
    x = torch.empty(2**28, dtype=torch.float32, device=device)
    seconds = timed(lambda: x.clone(), device, 10)
    return 2 * x.numel() * 4 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement")
    parser.add_argument("--shapes", default=None, help="e.g. 1x49152,64x151936")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    if device == "cuda" and not entrodec.kernels.cuda_available():
        # without it every "entrodec" row would fail, and the first call would time the torch fallback
        parser.error("--device cuda: Numba-CUDA cannot run here (install numba-cuda for this CUDA driver)")
    shapes = SHAPES if args.shapes is None else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    repeats = args.repeats or (20 if device == "cuda" else 5)
    torch.set_num_threads(torch.get_num_threads())

    # the first call: Numba loads its cached machine code, or compiles it (reported, never hidden)
    z = logits((2, 1000), device)
    started = time.perf_counter()
    SamplerChain([Temperature(1.0), TopH(0.4)]).sample(None, z, seeds=torch.arange(2, device=device))
    synchronize(device)
    first_call = time.perf_counter() - started
    print(f"first kernel call in this process (cache load or compile): {first_call:.2f} s", flush=True)

    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    rows = []
    for shape in shapes:
        z = logits(shape, device)
        seeds = torch.arange(shape[0], device=device)
        if device == "cuda":
            reads = {"one read (torch amax)": lambda: z.amax()}
        else:
            array = z.numpy()
            reads = {"one read (numpy max)": lambda: np.max(array)}
        for name in CHAINS:
            runners = make_runners(name, z, seeds)
            # the floor is timed with our kernel, call for call, so that "vs floor" is one phase's ratio; the
            # competitors apart (their calls churn through memory: whatever ran after one would run cold)
            competitors = {label: runners.pop(label) for label in ("torch reference", "transformers")}
            slow = shape[0] * shape[1] > 5e6 and device == "cpu"  # their calls take seconds
            times = timed_together(runners | reads, device, repeats)
            times |= timed_together(competitors, device, 2 if slow else repeats)
            if device == "cuda":
                times["HBM bound"] = z.numel() * 4 / bandwidth
            floor = {k: v for k, v in times.items() if k.startswith("one read") or k == "HBM bound"}
            row = dict(shape=list(shape), chain=name, seconds=times)
            rows.append(row)
            ours = times["entrodec"]
            bound = min(floor.values())
            print(f"{shape[0]:>4}x{shape[1]:<7} {name:18s} " + "  ".join(f"{k} {v * 1e3:8.3f} ms" for k, v in times.items())
                  + f"  | vs transformers {times['transformers'] / ours:6.1f}x, vs reference "
                  f"{times['torch reference'] / ours:6.1f}x, vs floor {ours / bound:5.1f}x", flush=True)
    result = dict(device=device, machine=machine, torch=torch.__version__, first_call_s=first_call,
                  copy_bandwidth_bytes_per_s=bandwidth, repeats=repeats, rows=rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"kernels_{device}.json").write_text(json.dumps(result, indent=2))
    table(rows)
    plot(rows, args.out / f"kernels_{device}.png", machine)


def table(rows) -> None:
    floor_key = [k for k in rows[0]["seconds"] if k.startswith("one read")][0]
    print(f"\n| shape | chain | entrodec ms | +telemetry ms | torch reference ms | transformers ms | {floor_key} ms "
          "| vs transformers | vs floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["seconds"]
        floor = min(v for k, v in t.items() if k.startswith("one read") or k == "HBM bound")
        print(f"| {r['shape'][0]}x{r['shape'][1]} | {r['chain']} | {t['entrodec'] * 1e3:.3f} | "
              f"{t['entrodec+telemetry'] * 1e3:.3f} | {t['torch reference'] * 1e3:.3f} | {t['transformers'] * 1e3:.3f} | "
              f"{t[floor_key] * 1e3:.3f} | {t['transformers'] / t['entrodec']:.1f}x | {t['entrodec'] / floor:.1f}x |")


def plot(rows, path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['shape'][0]}x{r['shape'][1]}\n{r['chain']}" for r in rows]
    series = ["entrodec", "entrodec+telemetry", "torch reference", "transformers"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(10, len(rows) * 0.9), 5))
    for k, name in enumerate(series):
        ax.bar(x + (k - 1.5) * 0.2, [r["seconds"][name] * 1e3 for r in rows], width=0.2, label=name)
    floors = [min(v for k, v in r["seconds"].items() if k.startswith("one read") or k == "HBM bound") * 1e3 for r in rows]
    ax.scatter(x, floors, marker="_", s=400, color="black", label="one-read floor", zorder=3)
    ax.set_yscale("log")
    ax.set_ylabel("ms per sampling step (median)")
    ax.set_xticks(x, labels, fontsize=6)
    ax.set_title(f"Sampling step: process + draw ({machine})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
