"""Coherence under heat and creativity of samplers on the default model (SmolLM2-135M-Instruct).

    python bench/quality.py            # the full run (about 36 minutes on 2 CPU cores)
    python bench/quality.py --quick    # a smaller run (a few minutes)
    python bench/quality.py overhead   # each sampler's time inside generate(), kernels vs torch
    python bench/quality.py overhead --chain creative --chain my_chain.yaml   # any chain

Coherence under heat: short factual and arithmetic questions written for this benchmark
(bench/quality_data.py), kept only where the default model answers correctly with greedy decoding;
then every sampler at every temperature answers each kept question ``--samples`` times. Accuracy with
95% intervals from a bootstrap over questions (samples of one question are not independent).

Creativity: open-ended prompts, several samples each: distinct-1/2 and pairwise bigram overlap across
a prompt's samples, the mean kept-set size, and a coherence proxy (mean log-likelihood per token of
the sampled text under the unprocessed model, read from generate()'s telemetry).

Writes bench/out/quality.json and the plots quality_accuracy.png and quality_diversity.png (or the
overhead table and overhead.json / overhead.png).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))

from quality_data import CREATIVE, arithmetic, factual  # noqa: E402

import entrodec.kernels  # noqa: E402
from entrodec.decoding import (  # noqa: E402
    EntropyTemperature,
    MinP,
    RowSamplers,
    SamplerChain,
    Temperature,
    TopH,
    TopP,
    chain_from_yaml,
    generate,
    load_model,
    load_preset,
)

SYSTEM = "Answer the question briefly."
ANSWER_TOKENS = 10  # enough for "The capital of France is Paris."
SAMPLERS: dict[str, Callable[[float], list]] = {
    "top-p 0.9": lambda t: [Temperature(t), TopP(0.9)],
    "min-p 0.1": lambda t: [Temperature(t), MinP(0.1)],
    "Top-H 0.4 (paper)": lambda t: [Temperature(t), TopH(0.4)],
    "Top-H 0.4 (hf)": lambda t: [Temperature(t), TopH(0.4, rule="hf")],
    "dynatemp": lambda t: [EntropyTemperature("dynatemp", temperature=t, dynatemp_range=t / 2)],
    "EDT": lambda t: [EntropyTemperature("edt", temperature=t, theta=0.2)],
    "temperature": lambda t: [Temperature(t)],
}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
WORD = re.compile(r"[\w']+")


def is_correct(question: str, reply: str, answers: str) -> bool:
    """Arithmetic: the first number after '=' (else the first number) equals the answer. Otherwise any
    accepted answer appears as whole words in the reply's first line."""
    line = reply.strip().split("\n")[0]
    if question.startswith("What is ") and any(op in question for op in (" + ", " - ", " times ")):
        tail = line.split("=", 1)[1] if "=" in line else line
        found = NUMBER.search(tail.replace(",", ""))
        return found is not None and float(found.group()) == float(answers)
    return any(re.search(rf"(?<![\w]){re.escape(a.lower())}(?![\w])", line.lower()) for a in answers.split("|"))


def conversation(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def keep_greedy_correct(model, tok, questions, batch: int) -> list[tuple[str, str]]:
    kept = []
    for _, chunk in tqdm(list(batches(questions, batch)), desc="greedy filter", unit="batch"):
        out = generate(model, tok, [conversation(q) for q, _ in chunk], max_new_tokens=ANSWER_TOKENS, stop="\n")
        kept += [(q, a) for (q, a), text in zip(chunk, out.texts) if is_correct(q, text, a)]
    return kept


def bootstrap_interval(per_question: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = per_question[rng.integers(0, len(per_question), size=(rounds, len(per_question)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def row_samplers(temperature: float, per_sampler: int) -> tuple[dict[str, list], list[str]]:
    """Every sampler's processors at ``temperature``, and the sampler of each of a prompt's samples
    (``per_sampler`` consecutive samples each)."""
    chains = {name: make(temperature) for name, make in SAMPLERS.items()}
    names = [name for name in SAMPLERS for _ in range(per_sampler)]
    return chains, names


def run_questions(model, tok, questions, temperature, samples, batch, bar) -> dict[str, dict]:
    """Every sampler answers every question ``samples`` times; one generate() call per batch of
    questions, so the model reads each question once for all samplers."""
    chains, names = row_samplers(temperature, samples)
    per_prompt = len(names)
    correct = {name: np.zeros(len(questions)) for name in SAMPLERS}
    kept = {name: [] for name in SAMPLERS}
    for start, chunk in batches(questions, batch):
        sampler = RowSamplers([chains[name] for _ in chunk for name in names])
        out = generate(model, tok, [conversation(q) for q, _ in chunk], sampler=sampler, max_new_tokens=ANSWER_TOKENS, stop="\n",
                       seed=[1000 + (start + i) * per_prompt for i in range(len(chunk))], n=per_prompt)
        for row, text in enumerate(out.texts):
            question, answers = chunk[row // per_prompt]
            name = names[row % per_prompt]
            correct[name][start + row // per_prompt] += is_correct(question, text, answers)
            kept[name] += out.telemetry[row].kept
        bar.update(1)
    results = {}
    for name in SAMPLERS:
        per_question = correct[name] / samples
        low, high = bootstrap_interval(per_question)
        results[name] = dict(accuracy=float(per_question.mean()), ci_low=low, ci_high=high,
                             mean_kept=float(np.mean(kept[name])), per_question=per_question.tolist())
    return results


def paired_difference(results: list[dict], a: str, b: str, temperature: float) -> dict:
    """Accuracy of sampler ``a`` minus ``b`` at one temperature, with a 95% bootstrap interval over
    questions resampled jointly (both samplers answered the same questions)."""
    rows = {r["sampler"]: np.array(r["per_question"]) for r in results if r["temperature"] == temperature}
    diff = rows[a] - rows[b]
    low, high = bootstrap_interval(diff)
    return dict(a=a, b=b, temperature=temperature, difference=float(diff.mean()), ci_low=low, ci_high=high)


def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(words[i:i + n]) for words in (WORD.findall(t.lower()) for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def pairwise_overlap(texts: list[str]) -> float:
    """Mean Jaccard similarity of word-bigram sets over pairs of samples (lower = more diverse)."""
    sets = []
    for t in texts:
        words = WORD.findall(t.lower())
        sets.append({tuple(words[i:i + 2]) for i in range(len(words) - 1)})
    scores = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1:] if a | b]
    return float(np.mean(scores)) if scores else 0.0


def run_creative(model, tok, prompts, temperature, samples, tokens, batch, bar) -> dict[str, dict]:
    chains, names = row_samplers(temperature, samples)
    per_prompt = len(names)
    texts = {name: [] for name in SAMPLERS}
    kept = {name: [] for name in SAMPLERS}
    loglik = {name: [] for name in SAMPLERS}
    for start, chunk in batches(prompts, batch):
        sampler = RowSamplers([chains[name] for _ in chunk for name in names])
        out = generate(model, tok, chunk, sampler=sampler, max_new_tokens=tokens, chat=True,
                       seed=[7 + (start + i) * per_prompt for i in range(len(chunk))], n=per_prompt)
        for row, text in enumerate(out.texts):
            name = names[row % per_prompt]
            texts[name].append(text)
            kept[name] += out.telemetry[row].kept
            loglik[name] += out.telemetry[row].logprob_before
        bar.update(1)
    results = {}
    for name in SAMPLERS:
        groups = [texts[name][i * samples:(i + 1) * samples] for i in range(len(prompts))]
        results[name] = dict(
            distinct_1=float(np.mean([distinct(g, 1) for g in groups])),
            distinct_2=float(np.mean([distinct(g, 2) for g in groups])),
            overlap=float(np.mean([pairwise_overlap(g) for g in groups])),
            mean_kept=float(np.mean(kept[name])),
            loglik_per_token=float(np.mean(loglik[name])),
            example=texts[name][0],
        )
    return results


def quality(args) -> None:
    model, tok = load_model()
    temperatures = [1.0, 2.0] if args.quick else [1.0, 1.5, 2.0, 3.0]
    pool = factual() + arithmetic()
    if args.quick:
        pool = pool[::6]
    started = time.perf_counter()
    questions = keep_greedy_correct(model, tok, pool, args.batch)
    print(f"{len(questions)} of {len(pool)} questions answered correctly by greedy decoding", flush=True)
    prompts = CREATIVE[:8] if args.quick else CREATIVE
    samples = 3 if args.quick else args.samples
    creative_samples = 3 if args.quick else 4
    creative_tokens = 24 if args.quick else 32
    results = []
    question_batches = -(-len(questions) // args.batch)
    prompt_batches = -(-len(prompts) // args.creative_batch)
    with tqdm(total=len(temperatures) * (question_batches + prompt_batches), desc="temperatures x batches",
              unit="batch") as bar:
        for t in temperatures:
            bar.set_postfix_str(f"T={t}")
            answers = run_questions(model, tok, questions, t, samples, args.batch, bar)
            creative = run_creative(model, tok, prompts, t, creative_samples, creative_tokens, args.creative_batch, bar)
            for name in SAMPLERS:
                row = dict(sampler=name, temperature=t) | answers[name]
                row |= {f"creative_{k}": v for k, v in creative[name].items()}
                results.append(row)
                tqdm.write(f"{name:18s} T={t:3.1f}  accuracy {row['accuracy']:.3f} "
                           f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]  kept {row['mean_kept']:.1f}  "
                           f"distinct-2 {row['creative_distinct_2']:.3f}  loglik {row['creative_loglik_per_token']:.2f}")
    results.sort(key=lambda r: (list(SAMPLERS).index(r["sampler"]), r["temperature"]))
    paired = [paired_difference(results, top_h, "min-p 0.1", t)
              for top_h in ("Top-H 0.4 (paper)", "Top-H 0.4 (hf)") for t in temperatures]
    summary = dict(
        questions_written=len(pool), questions_kept=len(questions), samples_per_question=samples,
        creative_prompts=len(prompts), creative_samples=creative_samples, creative_tokens=creative_tokens,
        temperatures=temperatures, minutes=(time.perf_counter() - started) / 60, paired=paired, results=results,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out / f"quality{suffix}.json").write_text(json.dumps(summary, indent=2))
    print_table(results)
    print("\n| Top-H vs min-p (paired over questions) | T | accuracy difference [95% CI] |")
    print("|---|---|---|")
    for d in paired:
        print(f"| {d['a']} − {d['b']} | {d['temperature']} | {d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |")
    plot_quality(results, temperatures, args.out, suffix)
    print(f"done in {summary['minutes']:.1f} min")


def print_table(results: list[dict]) -> None:
    print("\n| sampler | T | accuracy [95% CI] | mean kept | distinct-2 | bigram overlap | loglik/token |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['sampler']} | {r['temperature']} | {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
              f"| {r['mean_kept']:.1f} | {r['creative_distinct_2']:.3f} | {r['creative_overlap']:.3f} "
              f"| {r['creative_loglik_per_token']:.2f} |")


def plot_quality(results: list[dict], temperatures: list[float], out: Path, suffix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for offset, name in enumerate(SAMPLERS):
        rows = [r for r in results if r["sampler"] == name]
        x = np.array([r["temperature"] for r in rows]) + (offset - 3) * 0.025
        y = np.array([r["accuracy"] for r in rows])
        err = np.array([[r["accuracy"] - r["ci_low"] for r in rows], [r["ci_high"] - r["accuracy"] for r in rows]])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xlabel("temperature")
    ax.set_ylabel("accuracy on questions greedy answers correctly")
    ax.set_xticks(temperatures)
    ax.set_ylim(0, 1.02)
    ax.set_title("Coherence under heat: SmolLM2-135M-Instruct (95% bootstrap intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"quality_accuracy{suffix}.png", dpi=120)

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in SAMPLERS:
        rows = [r for r in results if r["sampler"] == name]
        ax.plot([r["creative_distinct_2"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
        for r in rows:
            ax.annotate(f"{r['temperature']:g}", (r["creative_distinct_2"], r["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("distinct-2 across samples of a creative prompt (higher = more diverse)")
    ax.set_ylabel("question accuracy")
    ax.set_title("Diversity vs accuracy (labels: temperature)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"quality_diversity{suffix}.png", dpi=120)
    print(f"plots: {out / f'quality_accuracy{suffix}.png'}, {out / f'quality_diversity{suffix}.png'}")


class TimedChain(SamplerChain):
    """A chain that records how long each of its steps takes inside generate()."""

    def __init__(self, processors) -> None:
        super().__init__(processors)
        self.seconds: list[float] = []

    def sample(self, *args, **kwargs):
        started = time.perf_counter()
        drawn = super().sample(*args, **kwargs)
        drawn.tokens.cpu()  # a device sync: the step is done
        self.seconds.append(time.perf_counter() - started)
        return drawn


def load_chain(spec: str) -> SamplerChain:
    """A preset name, or the path of a YAML chain file."""
    return chain_from_yaml(spec) if Path(spec).is_file() else load_preset(spec)


def overhead(args) -> None:
    """Per-step time of each sampler inside generate(), with the kernels and with the torch reference,
    against the whole step (model forward included)."""
    model, tok = load_model()
    prompts = [q for q, _ in factual()[: args.overhead_batch]]
    rows = []
    # the seven samplers at T = 1.5, or the chains named by --chain (preset names or YAML files), as given
    makers = {name: (lambda make=make: make(1.5)) for name, make in SAMPLERS.items()}
    if args.chain:
        makers = {spec: (lambda spec=spec: list(load_chain(spec))) for spec in args.chain}
    configs = [(name, kernels) for name in makers for kernels in (True, False)]
    for name, kernels in tqdm(configs, desc="overhead", unit="config"):
        with entrodec.kernels.use_kernels(kernels):
            chain = TimedChain(makers[name]())
            generate(model, tok, prompts, sampler=chain, max_new_tokens=4, chat=True, seed=0, ignore_eos=True)  # warm-up
            chain.seconds.clear()
            out = generate(model, tok, prompts, sampler=chain, max_new_tokens=args.overhead_tokens, chat=True,
                           seed=0, ignore_eos=True)
        steps = len(chain.seconds)
        sampler_ms = statistics.median(chain.seconds) * 1e3
        step_ms = out.elapsed_s / steps * 1e3
        rows.append(dict(sampler=name, kernels=kernels, sampler_ms=sampler_ms, step_ms=step_ms,
                         share=sampler_ms / step_ms))
    print(f"\nbatch {args.overhead_batch}, vocabulary {model.config.vocab_size}, {args.overhead_tokens} steps")
    print("| sampler | path | sampler ms/step (median) | whole step ms | sampler share |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sampler']} | {'kernels' if r['kernels'] else 'torch'} | {r['sampler_ms']:.2f} | "
              f"{r['step_ms']:.1f} | {100 * r['share']:.1f}% |")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"overhead_b{args.overhead_batch}" + ("_chains" if args.chain else "")
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    plot_overhead(rows, args.out / f"{stem}.png", args.overhead_batch)


def plot_overhead(rows: list[dict], path: Path, batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["sampler"] for r in rows))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for offset, kernels in ((-0.2, True), (0.2, False)):
        share = [100 * next(r["share"] for r in rows if r["sampler"] == n and r["kernels"] == kernels) for n in names]
        ax.bar(x + offset, share, width=0.4, label="kernels" if kernels else "torch reference")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="1% of a step")
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("sampler share of a generate() step (%)")
    ax.set_title(f"Sampler time inside generate(), default model, batch {batch}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=["quality", "overhead"], default="quality")
    parser.add_argument("--quick", action="store_true", help="fewer questions, temperatures and samples")
    parser.add_argument("--samples", type=int, default=5, help="samples per question and sampler")
    parser.add_argument("--batch", type=int, default=16, help="questions per generate() call (x 7 samplers x samples rows)")
    parser.add_argument("--creative-batch", type=int, default=10, help="creative prompts per generate() call")
    parser.add_argument("--overhead-batch", type=int, default=8)
    parser.add_argument("--overhead-tokens", type=int, default=32)
    parser.add_argument("--chain", action="append", metavar="PRESET_OR_YAML",
                        help="overhead: measure this chain (a preset name or a YAML chain file) instead of the seven "
                             "samplers; repeatable")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    torch.manual_seed(0)
    (overhead if args.mode == "overhead" else quality)(args)


if __name__ == "__main__":
    main()
