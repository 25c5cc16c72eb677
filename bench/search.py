"""Inference-time search on a verifiable multi-step task: accuracy against generated tokens.

Arms: greedy; self-consistency (majority vote); best-of-N, particle filtering (PF), ePF with Entropic
Annealing only, and ePF with annealing + Look-ahead Modulation — each once with the task's step
verifier as the reward and once with the policy's self-certainty (no reward model). N ∈ --n. Every
sampling arm draws from the same sampler (temperature --temperature). The task (bench/search_task.py)
adds three or four one-digit numbers, one addition per step; the default model solves about a third
greedily.

Results are appended to the JSON file run by run, so an interrupted benchmark resumes where it
stopped. A second section times forking a KV cache (what resampled particles do) against
recomputing the same prefixes.

    python bench/search.py                 # bench/out/search.{json,png}
    python bench/search.py --replot        # table and plot from the saved results
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_task import Problem, problems  # noqa: E402

from entrodec.decoding import Temperature, generate, load_model  # noqa: E402
from entrodec.decoding.decode_batch import DecodeBatch  # noqa: E402
from entrodec.decoding.prompts import encode_prompt  # noqa: E402
from entrodec.search import (  # noqa: E402
    BestOfN, EntropicParticleFilter, ParticleFilter, SelfCertainty, SelfConsistency,
)

OUT = Path(__file__).resolve().parent / "out"
SEARCH_ARMS = ("best-of-n", "pf", "epf-anneal", "epf-anneal+lookahead")
REWARDS = ("verifier", "self-certainty")


def make_searcher(arm: str, model, tok, problem: Problem, reward_name: str, n: int, args):
    if reward_name == "verifier":
        check = problem.verify_strict if args.verifier == "strict" else problem.verify
        reward = lambda prompt, text: check(text)  # noqa: E731
    else:
        reward = SelfCertainty("logprob")
    sampler = [Temperature(args.temperature)]
    if arm == "best-of-n":
        return BestOfN(model, tok, reward=reward, n=n, sampler=sampler, max_new_tokens=args.max_new_tokens)
    common = dict(n_particles=n, sampler=sampler, step_delimiter="\n\n", max_steps=args.max_steps,
                  max_step_tokens=args.max_step_tokens)
    if arm == "pf":
        return ParticleFilter(model, tok, reward, **common)
    return EntropicParticleFilter(model, tok, reward, lookahead=arm.endswith("lookahead"), **common)


def runs(args):
    """(key, callable) for every run, problem-major so a partial run covers every arm."""
    for index, problem in enumerate(problems(args.problems, args.seed)):
        if args.baselines:
            yield f"greedy|-|1|{index}", problem, lambda m, t, p=problem: _greedy(m, t, p, args)
        for n in args.n:
            if args.baselines:
                yield f"self-consistency|-|{n}|{index}", problem, lambda m, t, p=problem, n=n: SelfConsistency(
                    m, t, n=n, sampler=[Temperature(args.temperature)], max_new_tokens=args.max_new_tokens).run(p.prompt(), seed=index)
            for reward in args.rewards:
                for arm in SEARCH_ARMS:
                    yield f"{arm}|{reward}|{n}|{index}", problem, lambda m, t, p=problem, a=arm, r=reward, n=n: make_searcher(
                        a, m, t, p, r, n, args).run(p.prompt(), seed=index)


class _Greedy:
    def __init__(self, text, tokens):
        self.answer, self.tokens_generated, self.reused_prefix_tokens = text, tokens, 0
        self.particles, self.ess_history, self.temperature_history = [], [], []


def _greedy(model, tok, problem, args):
    out = generate(model, tok, problem.prompt(), max_new_tokens=args.max_new_tokens)
    return _Greedy(out.texts[0], out.generated_tokens)


def run_all(args, path: Path) -> dict:
    results = json.loads(path.read_text()) if path.exists() else {}
    model, tok = load_model()
    todo = [(k, p, f) for k, p, f in runs(args) if k not in results]
    print(f"{len(results)} runs saved, {len(todo)} to go", flush=True)
    started = time.perf_counter()
    for done, (key, problem, run) in enumerate(todo, 1):
        t0 = time.perf_counter()
        result = run(model, tok)
        results[key] = {
            "solved": problem.solved(result.answer), "tokens": result.tokens_generated,
            "reused_prefix_tokens": result.reused_prefix_tokens, "seconds": time.perf_counter() - t0,
            # the ceiling of the final choice: whether any final particle / sample was right
            "any_solved": any(problem.solved(p.text) for p in result.particles) or problem.solved(result.answer),
            "max_temperature": max(result.temperature_history, default=1.0),
            "min_ess_ratio": min(result.ess_history, default=len(result.particles)) / max(len(result.particles), 1),
        }
        path.write_text(json.dumps(results, indent=1))
        eta = (time.perf_counter() - started) / done * (len(todo) - done)
        print(f"[{done}/{len(todo)}] {key:45s} solved={results[key]['solved']!s:5s} tokens={result.tokens_generated:5d} "
              f"{results[key]['seconds']:5.1f}s  eta {eta / 60:5.1f} min", flush=True)
    return results


def summarise(results: dict) -> dict:
    """(arm, reward, n) → accuracy, mean tokens, problems counted (only problems every arm finished)."""
    by_problem: dict[int, set] = {}
    for key in results:
        arm, reward, n, index = key.split("|")
        by_problem.setdefault(int(index), set()).add((arm, reward, int(n)))
    everything = set.union(*by_problem.values()) if by_problem else set()
    complete = sorted(i for i, arms in by_problem.items() if arms == everything)
    table = {}
    for arm, reward, n in sorted(everything):
        rows = [results[f"{arm}|{reward}|{n}|{i}"] for i in complete]
        table[(arm, reward, n)] = {
            "accuracy": statistics.mean(r["solved"] for r in rows), "tokens": statistics.mean(r["tokens"] for r in rows),
            "reused": statistics.mean(r["reused_prefix_tokens"] for r in rows), "problems": len(rows),
            "any": statistics.mean(r.get("any_solved", r["solved"]) for r in rows),
            "annealed": statistics.mean(r.get("max_temperature", 1.0) > 1.0 for r in rows),
        }
    return table


def plot(table: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rewards = [r for r in REWARDS if any(k[1] == r for k in table)]
    fig, axes = plt.subplots(1, len(rewards), figsize=(max(8, 6 * len(rewards)), 4.8), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, reward in zip(axes, rewards):
        for arm, style in [("self-consistency", "k--"), *zip(SEARCH_ARMS, ("C0-", "C1-", "C2-", "C3-"))]:
            key_reward = "-" if arm == "self-consistency" else reward
            points = sorted((k[2], v) for k, v in table.items() if k[0] == arm and k[1] == key_reward)
            if points:
                ax.plot([v["tokens"] for _, v in points], [v["accuracy"] for _, v in points], style, marker="o", label=arm)
                if arm in SEARCH_ARMS:  # the population's ceiling: some final particle / sample was right
                    ax.plot([v["tokens"] for _, v in points], [v["any"] for _, v in points], style[:2] + ":", alpha=0.5)
                for n, v in points:
                    ax.annotate(f"N={n}", (v["tokens"], v["accuracy"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
        greedy = table.get(("greedy", "-", 1))
        if greedy:
            ax.scatter([greedy["tokens"]], [greedy["accuracy"]], color="k", marker="*", s=120, label="greedy", zorder=5)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("generated tokens per problem (look-ahead included)")
        ax.set_title(f"reward: {reward}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    problems_counted = next(iter(table.values()))["problems"] if table else 0
    fig.suptitle(f"Search on one-digit addition chains, SmolLM2-135M-Instruct ({problems_counted} problems)"
                 + (f", {title}" if title else "") + "\nsolid: accuracy of the chosen answer; dotted: some final particle right",
                 fontsize=10)
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_table(table: dict) -> None:
    print(f"{'arm':24s} {'reward':15s} {'N':>3s} {'accuracy':>9s} {'any right':>9s} {'tokens':>8s} {'reused':>8s} "
          f"{'annealed':>8s} {'problems':>8s}")
    for (arm, reward, n), v in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        print(f"{arm:24s} {reward:15s} {n:3d} {v['accuracy']:9.3f} {v['any']:9.3f} {v['tokens']:8.1f} {v['reused']:8.1f} "
              f"{v['annealed']:8.2f} {v['problems']:8d}")


def fork_timing(rounds: int = 5) -> dict:
    """Seconds to give 16 particles their parents' prefixes by forking the cache vs by recomputing them."""
    model, tok = load_model()
    prompt = encode_prompt(tok, problems(1)[0].prompt(), True)
    batch = DecodeBatch(model, pad_id=0)
    batch.join([prompt], [16])
    generated = []
    for step in range(24):  # 24 greedy-ish tokens of history per particle
        tokens = batch.logits.argmax(-1).tolist()
        generated.append(tokens)
        batch.advance(tokens)
    parents = [0, 0, 0, 0, 3, 3, 5, 5, 5, 7, 9, 9, 12, 12, 12, 15]
    sequences = [prompt + [generated[t][p] for t in range(24)] for p in parents]
    fork, recompute = [], []
    for _ in range(rounds):
        twin = batch.copy()
        t0 = time.perf_counter()
        twin.select(parents)
        fork.append(time.perf_counter() - t0)
        fresh = DecodeBatch(model, pad_id=0)
        t0 = time.perf_counter()
        fresh.join(sequences)
        recompute.append(time.perf_counter() - t0)
        torch.testing.assert_close(twin.logits, fresh.logits, rtol=0, atol=1e-3)
    return {"fork_s": statistics.median(fork), "recompute_s": statistics.median(recompute),
            "prefix_tokens": len(prompt) + 24, "particles": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=12)
    parser.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--seed", type=int, default=0, help="problem set seed; run r of a problem uses seed r")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-steps", type=int, default=5)
    parser.add_argument("--max-step-tokens", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--verifier", choices=["graded", "strict"], default="graded",
                        help="step verifier: graded (correct+1)/(steps+2), or strict 0.9 while all steps are right else 0.1")
    parser.add_argument("--rewards", nargs="+", choices=REWARDS, default=list(REWARDS))
    parser.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip greedy and self-consistency")
    parser.add_argument("--no-fork-timing", dest="fork_timing", action="store_false")
    parser.add_argument("--name", default="search", help="output files bench/out/NAME.{json,png}")
    parser.add_argument("--replot", action="store_true", help="only rebuild the table and plot from saved results")
    parser.add_argument("--quick", action="store_true", help="2 problems, N in {2, 4}: a smoke run (bench/out/NAME_quick.*)")
    args = parser.parse_args()
    if args.quick:
        args.problems, args.n, args.name = 2, [2, 4], args.name + "_quick"
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{args.name}.json"
    results = json.loads(path.read_text()) if args.replot else run_all(args, path)
    table = summarise({k: v for k, v in results.items() if not k.startswith("fork")})
    print_table(table)
    plot(table, OUT / f"{args.name}.png", f"{args.verifier} verifier" if "verifier" in args.rewards else "")
    if not args.replot and args.fork_timing:
        results["fork_timing"] = fork_timing()
        path.write_text(json.dumps(results, indent=1))
    if "fork_timing" in results:
        f = results["fork_timing"]
        print(f"fork {f['particles']} particles of {f['prefix_tokens']} tokens: {f['fork_s'] * 1e3:.2f} ms forking the cache vs "
              f"{f['recompute_s'] * 1e3:.1f} ms recomputing ({f['recompute_s'] / f['fork_s']:.0f}x)")
    print(f"wrote {path} and {OUT / (args.name + '.png')}")


if __name__ == "__main__":
    main()
