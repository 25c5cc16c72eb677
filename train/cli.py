"""``entrodec train``: a GRPO run with entropy control from a YAML config or a shipped preset."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def add_train_command(commands) -> None:
    from .config import available_presets

    p = commands.add_parser(
        "train", help="RL fine-tuning (GRPO) with entropy control; rollouts through entrodec's samplers",
        description="Train with GRPO on a verifiable task. Metrics go to OUTPUT/metrics.jsonl (one line per step), "
                    "a checkpoint to OUTPUT/checkpoint.pt, plots to OUTPUT/metrics.png and the final model to "
                    "OUTPUT/model. Works unchanged under torchrun --nproc_per_node=N.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", default=None, help="a YAML training config")
    source.add_argument("--preset", default=None, help=f"a shipped config: {', '.join(available_presets())}")
    p.add_argument("--steps", type=int, default=None, help="train until this many steps are done (default: the config's; with --resume, a new total)")
    p.add_argument("--output", default=None, help="run folder (default: runs/<preset or config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--model", default=None, help="override the config's model (default, tiny-random or a path)")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train_command(args: argparse.Namespace) -> int:
    from . import distributed
    from .config import load_config, load_preset
    from .trainer import Trainer, resume_config

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.resume:
        if args.output is None:
            raise ValueError("--resume needs --output, the folder of the run to continue")
        if args.config or args.preset or args.model or args.seed is not None:
            raise ValueError("--resume continues with the run's own config (OUTPUT/config.yaml); drop --config, --preset, --model and --seed")
        config = resume_config(args.output)
        output = Path(args.output)
    else:
        if not (args.config or args.preset):
            raise ValueError("give --config FILE or --preset NAME (or --resume --output DIR)")
        config = load_config(args.config) if args.config else load_preset(args.preset)
        name = args.preset or Path(args.config).stem
        output = Path(args.output) if args.output else Path("runs") / name
        # saved with the run's config, so that --resume continues towards the same number of steps
        overrides = {k: v for k, v in (("model", args.model), ("seed", args.seed), ("steps", args.steps)) if v is not None}
        config = dataclasses.replace(config, **overrides).check()
    trainer = Trainer(config, output, progress=not args.quiet)
    try:
        history = trainer.run(steps=args.steps, resume=args.resume)
    finally:
        distributed.stop(trainer.processes)
    if trainer.processes.main and history:
        last = history[-1]
        print(f"entrodec: {len(history)} steps in {output}: reward {last['reward_mean']:.3f}, "
              f"entropy {last['entropy_mean']:.3f} nats at step {last['step']}", file=sys.stderr)
    return 0
