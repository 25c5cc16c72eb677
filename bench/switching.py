"""Entropy-adaptive model switching (EAD): accuracy against cost as the threshold moves.

    python bench/switching.py                 # the full run (about 45 minutes on 2 CPU cores)
    python bench/switching.py --replot        # redraw the plot from bench/out/switching.json
    python bench/switching.py --window 5 --min-dwell 10 --thresholds 0.5 1 2 4 --tag _paper   # the paper's rule

Large model: the default model (SmolLM2-135M-Instruct). Small model: an early-exit draft of it
(``make_draft(large, layers=--layers, distill_tokens=--distill-tokens)``, cached after the first run).
Questions: every question of the quality benchmark's coherence set (bench/quality_data.py, graded by
bench/quality.py's ``is_correct``), unfiltered, so the large model's own accuracy is measured rather
than fixed at 100%. For each threshold (±inf, then quantiles of the draft's own per-token entropy) and
each sampler (greedy; Top-H 0.4 at T = 1, one seeded sample per question): accuracy, large-token
fraction, estimated cost relative to the large model alone (per position and per forward pass, catch-up
included) and wall-clock relative to the large model alone measured in the same process.

Results are saved after every configuration; a rerun skips the ones already in the JSON.
Writes bench/out/switching.json and bench/out/switching.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))

from quality import ANSWER_TOKENS, batches, bootstrap_interval, conversation, is_correct  # noqa: E402
from quality_data import arithmetic, factual  # noqa: E402

from entrodec.decoding import ModelSwitch, Temperature, TopH, generate, load_model, make_draft  # noqa: E402

SAMPLERS = {"greedy": lambda: None, "Top-H 0.4, T=1": lambda: [Temperature(1.0), TopH(0.4)]}


def answer_all(large, tok, questions, sampler_name, switch, batch, bar) -> dict:
    correct, summaries, tokens, started = [], [], 0, time.perf_counter()
    for start, chunk in batches(questions, batch):
        out = generate(large, tok, [conversation(q) for q, _ in chunk], sampler=SAMPLERS[sampler_name](),
                       max_new_tokens=ANSWER_TOKENS, stop="\n", seed=[500 + start + i for i in range(len(chunk))],
                       switch=switch)
        correct += [float(is_correct(q, text, a)) for (q, a), text in zip(chunk, out.texts)]
        tokens += out.generated_tokens
        if out.switching is not None:
            summaries.append((out.generated_tokens, out.switch_summary()))
        bar.update(1)
    per_question = np.array(correct)
    low, high = bootstrap_interval(per_question)
    row = dict(accuracy=float(per_question.mean()), ci_low=low, ci_high=high, tokens=tokens,
               seconds=time.perf_counter() - started, per_question=per_question.tolist())
    if summaries:
        weight = sum(n for n, _ in summaries)
        for key in ("large_fraction", "cost", "cost_passes"):
            row[key] = sum(n * s[key] for n, s in summaries) / weight
        row["catch_up_large"] = sum(s["catch_up_large"] for _, s in summaries)
        row["catch_up_small"] = sum(s["catch_up_small"] for _, s in summaries)
    return row


def draft_entropy_quantiles(draft, tok, questions, batch, quantiles) -> list[float]:
    """Per-token entropy (bits) of the draft's own greedy answers, at the given quantiles."""
    bits = []
    for _, chunk in batches(questions, batch):
        out = generate(draft, tok, [conversation(q) for q, _ in chunk], max_new_tokens=ANSWER_TOKENS, stop="\n")
        bits += [h / math.log(2) for row in out.telemetry for h in row.entropy_before]
    return [float(np.quantile(bits, q)) for q in quantiles]


def run(args) -> None:
    path = args.out / f"switching{args.tag}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    results = saved.get("results", [])
    large, tok = load_model()
    draft = make_draft(large, layers=args.layers, distill_tokens=args.distill_tokens, tokenizer=tok)
    questions = factual() + arithmetic()
    if args.limit:
        questions = questions[:: max(1, len(questions) // args.limit)]
    if args.thresholds:
        saved["thresholds"] = args.thresholds
    elif "thresholds" not in saved:
        saved["thresholds"] = draft_entropy_quantiles(draft, tok, questions, args.batch, args.quantiles)
    thresholds = [math.inf] + saved["thresholds"] + [-math.inf]
    saved.update(layers=args.layers, distill_tokens=args.distill_tokens, window=args.window, min_dwell=args.min_dwell,
                 questions=len(questions), draft=draft.config.entrodec_draft, quantiles=args.quantiles)
    done = {(r["sampler"], r["threshold"]) for r in results}
    configs = [(s, "large alone") for s in SAMPLERS] + [(s, t) for s in SAMPLERS for t in thresholds]
    todo = [(s, t) for s, t in configs if (s, str(t)) not in done]
    with tqdm(total=len(todo) * math.ceil(len(questions) / args.batch), desc="configurations x batches", unit="batch") as bar:
        for sampler_name, threshold in todo:
            switch = None if threshold == "large alone" else ModelSwitch(draft, threshold, window=args.window, min_dwell=args.min_dwell)
            row = answer_all(large, tok, questions, sampler_name, switch, args.batch, bar)
            results.append(dict(sampler=sampler_name, threshold=str(threshold), **row))
            saved["results"] = results
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(saved, indent=1))
    plot(saved, args.out / f"switching{args.tag}.png")
    table(saved)


def table(saved: dict) -> None:
    alone = {r["sampler"]: r for r in saved["results"] if r["threshold"] == "large alone"}
    print("| sampler | threshold (bits) | accuracy [95% CI] | rel. accuracy | large tokens | cost (positions) | cost (passes) | wall-clock vs large |")
    print("|---|---|---|---|---|---|---|---|")
    for r in saved["results"]:
        base = alone.get(r["sampler"])
        if r["threshold"] == "large alone" or base is None:
            continue
        print(f"| {r['sampler']} | {float(r['threshold']):.2f} | {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
              f"{r['accuracy'] / base['accuracy']:.1%} | {r['large_fraction']:.1%} | {r['cost']:.2f} | {r['cost_passes']:.2f} | "
              f"{r['seconds'] / base['seconds']:.2f} |")


def plot(saved: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), sharey=True)
    alone = {r["sampler"]: r for r in saved["results"] if r["threshold"] == "large alone"}
    for ax, (key, label) in zip(axes, [("cost", "estimated cost, per position (large alone = 1)"),
                                       ("cost_passes", "estimated cost, per forward pass (large alone = 1)"),
                                       ("wall", "wall-clock (large alone = 1)")]):
        for colour, sampler in zip(("tab:blue", "tab:orange"), SAMPLERS):
            rows = [r for r in saved["results"] if r["sampler"] == sampler and r["threshold"] != "large alone"]
            if not rows or sampler not in alone:
                continue
            base = alone[sampler]
            xs = [r["seconds"] / base["seconds"] if key == "wall" else r[key] for r in rows]
            ys = [r["accuracy"] / base["accuracy"] for r in rows]
            ax.plot(xs, ys, "o-", color=colour, label=sampler)
            for x, y, r in zip(xs, ys, rows):
                ax.annotate(f"{float(r['threshold']):.1f}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(0.9, color="grey", ls=":", lw=1)
        ax.axvline(0.6, color="grey", ls=":", lw=1)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy relative to the large model alone")
    axes[0].legend()
    fig.suptitle(f"EAD on SmolLM2-135M-Instruct with a {saved['layers']}-layer distilled early-exit draft "
                 f"(window {saved['window']}, dwell {saved['min_dwell']}; labels: threshold in bits; "
                 f"dotted: 90% accuracy, 60% cost)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8, help="decoder layers of the early-exit draft")
    parser.add_argument("--distill-tokens", type=int, default=16_000, help="tokens of large-model text to distil on")
    parser.add_argument("--window", type=int, default=3, help="rolling-mean window (answers are at most 10 tokens)")
    parser.add_argument("--min-dwell", type=int, default=3, help="minimum dwell between switches")
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8],
                        help="thresholds: these quantiles of the draft's per-token entropy")
    parser.add_argument("--thresholds", type=float, nargs="+", default=None, help="explicit thresholds in bits instead of quantiles")
    parser.add_argument("--tag", default="", help="suffix of the output files (switching<TAG>.json/.png)")
    parser.add_argument("--batch", type=int, default=32, help="questions per generate() call")
    parser.add_argument("--limit", type=int, default=0, help="use about this many questions (0: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot and table from the JSON")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads((args.out / f"switching{args.tag}.json").read_text())
        plot(saved, args.out / f"switching{args.tag}.png")
        table(saved)
        return
    run(args)


if __name__ == "__main__":
    main()
