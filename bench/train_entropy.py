"""Entropy collapse and its control in GRPO: the default model on a shipped task (lowercase format
constraint by default, or exact-answer arithmetic), on CPU.

Arms (same seed, prompts, sampler and optimiser; only the entropy control or the rollout sampler differs):
  none            plain GRPO (clipped ratio, token-mean)
  clip-cov        Clip-Cov (Cui et al.): a random share of high-covariance tokens pass no gradient
  target-entropy  AEPO-style: an auxiliary rollout at T_high / T_low steers entropy to --target
  hapo            no control, but HAPO entropy-adaptive temperature in the rollout sampler (statistics
                  from the previous rollout batch)
Each arm is a resumable run in bench/out/train_entropy_<task>/<arm>/ (metrics.jsonl, checkpoint): an
interrupted benchmark picks up where it stopped. At the end: bench/out/train_entropy_<task>.{json,png}.

    python bench/train_entropy.py                     # all arms, --steps each
    python bench/train_entropy.py --arms none,clip-cov
    python bench/train_entropy.py --replot --evaluate   # + every final model on one shared prompt set
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from entrodec.train import Trainer, config_from_dict, load_preset
from entrodec.train.checkpoint import read_metrics
from entrodec.train.plots import plot_runs

OUT = Path(__file__).resolve().parent / "out"
ARMS = ("none", "clip-cov", "target-entropy", "hapo")


TASKS = {
    "lowercase": {"name": "lowercase"},
    "arithmetic": {"name": "arithmetic", "max_operand": 9, "operations": "+"},
}


def arm_config(arm: str, args) -> dict:
    base = load_preset("demo").to_dict()
    base["task"] = TASKS[args.task]
    base["steps"] = args.steps
    base["seed"] = args.seed
    base["checkpoint_every"] = 1
    base["optim"]["lr"] = args.lr
    base["entropy_control"] = {"method": "none"}
    if arm == "clip-cov":
        # The paper's 2e-4 of tokens assumes batches of ~10^5 tokens; ours hold ~500, so a larger share
        # is needed for more than one token per update.
        base["entropy_control"] = {"method": "clip-cov", "fraction": args.clip_fraction}
    elif arm == "target-entropy":
        base["entropy_control"] = {"method": "target-entropy", "target": target_entropy(args)}
    elif arm == "hapo":
        base["sampler"] = [{"entropy_temperature": {"kind": "hapo", "temperature": 1.0, "tau": 0.3}},
                           *base["sampler"][1:]]
    return base


def target_entropy(args) -> float:
    """--target, or by default the entropy the uncontrolled arm starts from (hold it where it was)."""
    if args.target is not None:
        return args.target
    start = read_metrics(OUT / f"train_entropy_{args.task}" / "none")
    if not start:
        raise SystemExit("--target is needed when the 'none' arm has not run yet (it sets the default target)")
    return round(start[0]["entropy_mean"], 3)


def run_arm(arm: str, args) -> list[dict]:
    folder = OUT / f"train_entropy_{args.task}" / arm
    done = read_metrics(folder)
    if len(done) >= args.steps:
        print(f"[{arm}] already done ({len(done)} steps)", file=sys.stderr)
        return done[: args.steps]
    resume = (folder / "checkpoint.pt").is_file()
    if not resume and folder.exists():
        shutil.rmtree(folder)  # started but never checkpointed: start clean
    print(f"[{arm}] {'resuming at step ' + str(len(done)) if resume else 'starting'}", file=sys.stderr)
    trainer = Trainer(config_from_dict(arm_config(arm, args), arm), folder)
    return trainer.run(steps=args.steps, resume=resume)


def evaluate_final(arm: str, args) -> dict:
    """The arm's final model on one fixed prompt set shared by every arm (the per-step numbers above
    come from each step's own prompts): mean token entropy, kept-set size and reward."""
    from entrodec.decoding import load_model
    from entrodec.train.rollout import roll_out
    from entrodec.train.tasks import make_task
    from entrodec.train.trainer import _chain

    config = arm_config("none", args)  # the plain rollout sampler for every arm
    model, tokenizer = load_model(None if arm == "base" else str(OUT / f"train_entropy_{args.task}" / arm / "model"))
    task = make_task(**config["task"])
    examples = task.examples(10_000, 0, args.eval_prompts)
    rollouts = roll_out(model, tokenizer, task, examples, _chain(config["sampler"]), 4, config["rollout"]["max_new_tokens"],
                        list(range(len(examples))))
    entropies = [h for row in rollouts.entropy for h in row]
    kept = [k for row in rollouts.kept for k in row]
    return {"final_entropy": statistics.mean(entropies), "final_kept": statistics.mean(kept),
            "final_reward": float(rollouts.rewards.mean())}


def summarise(runs: dict[str, list[dict]], window: int) -> dict:
    table = {}
    for arm, records in runs.items():
        head, tail = records[:window], records[-window:]
        table[arm] = {
            "steps": len(records),
            "entropy_first": statistics.mean(r["entropy_mean"] for r in head),
            "entropy_last": statistics.mean(r["entropy_mean"] for r in tail),
            "entropy_min": min(r["entropy_mean"] for r in records),
            "reward_first": statistics.mean(r["reward_mean"] for r in head),
            "reward_last": statistics.mean(r["reward_mean"] for r in tail),
            "kept_first": statistics.mean(r["kept_mean"] for r in head),
            "kept_last": statistics.mean(r["kept_mean"] for r in tail),
            "seconds_per_step": statistics.mean(r["elapsed_s"] for r in records),
        }
    return table


def print_table(table: dict, window: int) -> None:
    print(f"{'arm':16s} {'steps':>5s} {'H first':>8s} {'H last':>8s} {'H min':>7s} {'R first':>8s} {'R last':>8s} "
          f"{'kept first':>10s} {'kept last':>9s} {'s/step':>7s}   (first/last = mean of {window} steps)")
    for arm, row in table.items():
        print(f"{arm:16s} {row['steps']:5d} {row['entropy_first']:8.3f} {row['entropy_last']:8.3f} {row['entropy_min']:7.3f} "
              f"{row['reward_first']:8.3f} {row['reward_last']:8.3f} {row['kept_first']:10.1f} {row['kept_last']:9.1f} "
              f"{row['seconds_per_step']:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default=",".join(ARMS[:3]), help=f"comma-separated, from {', '.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=sorted(TASKS), default="lowercase", help="the shipped task trained on")
    parser.add_argument("--target", type=float, default=None,
                        help="target entropy (nats) of the target-entropy arm (default: the none arm's first-step entropy)")
    parser.add_argument("--clip-fraction", type=float, default=0.02, help="Clip-Cov's share of tokens")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--window", type=int, default=4, help="steps averaged for first/last")
    parser.add_argument("--replot", action="store_true", help="only rebuild the table and plot from saved runs")
    parser.add_argument("--evaluate", action="store_true", help="also score each arm's final model on one shared prompt set")
    parser.add_argument("--eval-prompts", type=int, default=16)
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    for arm in arms:
        if arm not in ARMS:
            parser.error(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    runs = {}
    for arm in arms:
        runs[arm] = read_metrics(OUT / f"train_entropy_{args.task}" / arm)[: args.steps] if args.replot else run_arm(arm, args)
    runs = {arm: records for arm, records in runs.items() if records}
    table = summarise(runs, args.window)
    print_table(table, args.window)
    if args.evaluate:  # "base": the untrained model, for reference
        table["base"] = evaluate_final("base", args)
        print(f"{'base':16s} untrained model: entropy {table['base']['final_entropy']:.3f}, kept {table['base']['final_kept']:.1f}, "
              f"reward {table['base']['final_reward']:.3f}")
        for arm in runs:
            table[arm].update(evaluate_final(arm, args))
            print(f"{arm:16s} final model on {args.eval_prompts} shared prompts × 4: entropy {table[arm]['final_entropy']:.3f}, "
                  f"kept {table[arm]['final_kept']:.1f}, reward {table[arm]['final_reward']:.3f}")
    OUT.mkdir(exist_ok=True)
    name = f"train_entropy_{args.task}"
    command = "python bench/train_entropy.py " + " ".join(sys.argv[1:])
    wall_s = time.time() - started
    if args.replot and (OUT / f"{name}.json").is_file():  # keep the command and time that trained the arms
        saved = json.loads((OUT / f"{name}.json").read_text())
        command, wall_s = saved["command"].split("; then ")[0] + f"; then {command}", saved["wall_s"]
    (OUT / f"{name}.json").write_text(json.dumps({
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "config": {arm: arm_config(arm, args) for arm in runs},
        "table": table,
        "wall_s": wall_s,
    }, indent=1))
    plot_runs(runs, OUT / f"{name}.png",
              title=f"GRPO on {args.task}, SmolLM2-135M-Instruct, lr {args.lr:g}: entropy control arms")
    print(f"wrote {OUT / (name + '.json')} and {OUT / (name + '.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
