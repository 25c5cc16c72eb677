"""Tokens/s of entrodec's generate() against transformers' model.generate() on the default model.

Both sides decode the same prompts for exactly --new-tokens tokens (EOS ignored by us, masked by
transformers' min_new_tokens), with equivalent
sampling: greedy; top-p 0.9 (transformers' own TopPLogitsWarper vs ours); Top-H 0.4 in the "hf" rule
(transformers' TopHLogitsWarper vs ours). Runs alternate between the two sides, several rounds, and
the median is reported, so both see the same machine state.

    python bench/generate_overhead.py            # writes bench/out/generate_overhead.{json,png}
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from entrodec.decoding import Temperature, TopH, TopP, generate, load_model

PROMPTS = [
    "Write a haiku about rain.",
    "Explain in two sentences why the sky is blue.",
    "List three uses of a paperclip.",
    "What is the capital of Japan, and what is it known for?",
    "Tell me a short story about a robot who learns to paint.",
    "Give me a recipe for pancakes.",
    "Why do cats purr?",
    "Describe the water cycle for a ten-year-old, step by step.",
]

CONFIGS = {
    "greedy": (None, dict(do_sample=False)),
    "top_p_0.9": ([Temperature(1.0), TopP(0.9)], dict(do_sample=True, temperature=1.0, top_p=0.9, top_k=0)),
    "top_h_0.4_hf": ([Temperature(1.0), TopH(0.4, rule="hf")], dict(do_sample=True, temperature=1.0, top_h=0.4, top_k=0)),
}


def run_ours(model, tok, prompts, sampler, new_tokens):
    start = time.perf_counter()
    out = generate(model, tok, prompts, sampler=sampler, max_new_tokens=new_tokens, seed=0, chat=True, ignore_eos=True)
    elapsed = time.perf_counter() - start
    assert all(len(ids) == new_tokens for ids in out.token_ids)
    return len(prompts) * new_tokens / elapsed


def run_hf(model, tok, prompts, kwargs, new_tokens):
    config = copy.deepcopy(model.generation_config)
    # decode exactly new_tokens, as ignore_eos does on our side (eos_token_id=None would be refilled
    # from the model's defaults, so EOS is masked until the end instead)
    config.update(**kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    start = time.perf_counter()  # templating and tokenising are timed on both sides
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    batch = tok(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**batch, generation_config=config)
    elapsed = time.perf_counter() - start
    assert out.shape[1] - batch["input_ids"].shape[1] == new_tokens
    return len(prompts) * new_tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model, tok = load_model()
    run_ours(model, tok, PROMPTS[:1], None, 4)  # warm-up: first-call allocations on both paths
    run_hf(model, tok, PROMPTS[:1], dict(do_sample=False), 4)

    results = []
    total = len(args.batches) * len(CONFIGS) * args.rounds
    done = 0
    for batch in args.batches:
        prompts = PROMPTS[:batch] if batch <= len(PROMPTS) else (PROMPTS * (batch // len(PROMPTS) + 1))[:batch]
        for name, (sampler, hf_kwargs) in CONFIGS.items():
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(run_ours(model, tok, prompts, sampler, args.new_tokens))
                theirs.append(run_hf(model, tok, prompts, hf_kwargs, args.new_tokens))
                done += 1
                print(f"[{done}/{total}] batch {batch} {name}: entrodec {ours[-1]:.1f} tok/s, "
                      f"transformers {theirs[-1]:.1f} tok/s", flush=True)
            row = dict(batch=batch, sampler=name, entrodec=statistics.median(ours), transformers=statistics.median(theirs))
            row["ratio"] = row["entrodec"] / row["transformers"]
            results.append(row)

    print("\n| batch | sampler | entrodec tok/s | transformers tok/s | ratio |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch']} | {r['sampler']} | {r['entrodec']:.1f} | {r['transformers']:.1f} | {r['ratio']:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generate_overhead.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "generate_overhead.png")


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"b{r['batch']}\n{r['sampler']}" for r in results]
    x = range(len(results))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar([i - 0.2 for i in x], [r["entrodec"] for r in results], width=0.4, label="entrodec generate()")
    ax.bar([i + 0.2 for i in x], [r["transformers"] for r in results], width=0.4, label="transformers generate()")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("tokens / s (median)")
    ax.set_title("SmolLM2-135M-Instruct, CPU: generation throughput")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
