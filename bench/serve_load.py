"""Load on the OpenAI-compatible server over loopback: 1, 4, 8 and 16 concurrent clients.

Each client sends streaming chat requests back to back (the default model, Temperature 1.0 → Top-H
0.4, a different seed per request, exactly --tokens new tokens each: EOS is ignored so every request
costs the same). Reported per level: aggregate completion tokens/s, request latency and time to first
token (p50/p90/p99), and the speed-up over one-at-a-time (one client). The run is bounded: at most
--requests-per-client requests per client and --seconds per level. Each server runs in its own
process (`entrodec serve`), as users run it; the clients are threads of this one.

With --transformers, the same load is sent to `transformers serve` (started here on the same cached
model folder, with and without its continuous batching) for a side-by-side.

    python bench/serve_load.py                  # writes bench/out/serve_load.{json,png}
    python bench/serve_load.py --quick          # 1 and 8 clients, fewer requests
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from tqdm import tqdm

PROMPTS = [
    "Write a haiku about rain.", "Explain why the sky is blue.", "List three uses of a paperclip.",
    "What is the capital of Japan?", "Tell me a short story about a robot.", "Give me a pancake recipe.",
    "Why do cats purr?", "Describe the water cycle.",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def one_request(client: httpx.Client, url: str, model: str, index: int, tokens: int, extensions: bool) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
            "max_tokens": tokens, "temperature": 1.0, "seed": index, "stream": True,
            "stream_options": {"include_usage": True}}
    if extensions:
        body.update(top_h=0.4, ignore_eos=True)
    start = time.perf_counter()
    first = None
    usage = None
    with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter() - start
            usage = chunk.get("usage") or usage
    elapsed = time.perf_counter() - start
    return {"latency": elapsed, "ttft": first if first is not None else elapsed,
            "tokens": usage["completion_tokens"] if usage else 0}


def run_level(url: str, model: str, clients: int, per_client: int, seconds: float, tokens: int, extensions: bool,
              bar: tqdm) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    def client_loop() -> None:
        with httpx.Client() as client:
            for _ in range(per_client):
                if time.perf_counter() > deadline:
                    return
                with lock:
                    index = next(counter)
                result = one_request(client, url, model, index, tokens, extensions)
                with lock:
                    results.append(result)
                    bar.update(1)

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    total = sum(r["tokens"] for r in results)
    lat = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    return {
        "clients": clients, "requests": len(results), "tokens": total, "wall_s": wall,
        "tokens_per_s": total / wall,
        "latency_s": {f"p{q}": percentile(lat, q) for q in (50, 90, 99)},
        "ttft_s": {f"p{q}": percentile(ttft, q) for q in (50, 90, 99)},
        "mean_tokens_per_request": statistics.mean(r["tokens"] for r in results),
    }


def _start(command: list[str], url: str, env: dict[str, str] | None = None):
    """Run a server command in its own process (as users run it; the load generator's threads then do
    not share its interpreter) and wait until /health answers."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        process.kill()
        raise RuntimeError(f"{' '.join(command)} did not start in 300 s")

    def stop() -> None:
        process.terminate()
        process.wait(timeout=30)

    return stop


def serve_ours(port: int, max_batch: int):
    command = [sys.executable, "-m", "entrodec.decoding.cli", "serve", "--port", str(port), "--max-batch",
               str(max_batch), "--max-queue", "256"]
    url = f"http://127.0.0.1:{port}"
    return url, "SmolLM2-135M-Instruct", _start(command, url)


def serve_transformers(port: int, continuous: bool):
    from entrodec.decoding.loading import _local_folder_for

    folder = str(_local_folder_for(None))
    command = [str(Path(sys.executable).with_name("transformers")), "serve", folder, "--port", str(port),
               "--continuous-batching" if continuous else "--no-continuous-batching"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}"
    return url, folder, _start(command, url, env)


def measure(name: str, url: str, model: str, levels: list[int], args, extensions: bool) -> list[dict]:
    with httpx.Client() as client:  # warm up: kernels compiled, caches filled
        one_request(client, url, model, 0, 4, extensions)
    rows = []
    for clients in levels:
        per_client = args.requests_per_client if clients > 1 else args.requests_per_client * 2
        with tqdm(total=clients * per_client, desc=f"{name}: {clients} client(s)", unit="req") as bar:
            row = run_level(url, model, clients, per_client, args.seconds, args.tokens, extensions, bar)
        row["server"] = name
        rows.append(row)
        print(f"  {name} {clients:2d} clients: {row['tokens_per_s']:7.1f} tok/s, latency p50 {row['latency_s']['p50']:.2f} s,"
              f" ttft p50 {row['ttft_s']['p50']:.2f} s ({row['requests']} requests)", file=sys.stderr)
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup_vs_one_at_a_time"] = row["tokens_per_s"] / base
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, server in enumerate(dict.fromkeys(r["server"] for r in rows)):
        mine = [r for r in rows if r["server"] == server]
        xs, color = [r["clients"] for r in mine], f"C{i}"
        left.plot(xs, [r["tokens_per_s"] for r in mine], "o-", color=color, label=server)
        right.plot(xs, [r["latency_s"]["p50"] for r in mine], "o-", color=color, label=f"{server} p50")
        right.plot(xs, [r["latency_s"]["p90"] for r in mine], "o--", color=color, label=f"{server} p90", alpha=0.5)
    left.set(xlabel="concurrent clients", ylabel="aggregate completion tokens/s", title="Throughput")
    right.set(xlabel="concurrent clients", ylabel="request latency (s)", title="Latency")
    for ax in (left, right):
        ax.set_xticks(sorted({r["clients"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=240, help="stop sending new requests after this long per level")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 and 8 clients, 2 requests per client, 32 tokens")
    parser.add_argument("--transformers", action="store_true", help="also load `transformers serve` the same way")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--name", default=None, help="output file stem (default serve_load, serve_load_quick with --quick)")
    parser.add_argument("--replot", type=Path, default=None, help="only redraw the plot of a saved JSON")
    args = parser.parse_args()
    if args.replot is not None:
        plot(json.loads(args.replot.read_text())["rows"], args.replot.with_suffix(".png"))
        return
    levels = [1, 4, 8, 16]
    if args.quick:
        levels, args.requests_per_client, args.tokens = [1, 8], 2, 32
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    url, model, stop = serve_ours(8390, args.max_batch)
    try:
        rows = measure("entrodec", url, model, levels, args, extensions=True)
    finally:
        stop()
    if args.transformers:
        for continuous in (False, True):
            name = "transformers serve" + (" --continuous-batching" if continuous else "")
            try:
                url, model, stop = serve_transformers(8391, continuous)
            except RuntimeError as error:
                print(f"  {name}: could not run here: {error}", file=sys.stderr)
                continue
            try:
                rows += measure(name, url, model, levels, args, extensions=False)
            except Exception as error:  # a competitor failing is a result to record, not a crash
                print(f"  {name}: failed under load: {error!r}", file=sys.stderr)
            finally:
                stop()
    stem = args.name or ("serve_load_quick" if args.quick else "serve_load")
    record = {"command": " ".join(sys.argv), "tokens_per_request": args.tokens, "rows": rows,
              "elapsed_s": time.time() - started}
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    plot(rows, args.out / f"{stem}.png")
    print(json.dumps([{k: r[k] for k in ("server", "clients", "tokens_per_s", "speedup_vs_one_at_a_time")} for r in rows],
                     indent=1))


if __name__ == "__main__":
    main()
