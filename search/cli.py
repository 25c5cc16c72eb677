"""``entrodec search``: inference-time search for one prompt from the command line."""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import json
import sys

from ..decoding.callables import load_callable
from .particle_filter import SELECTIONS
from .resampling import METHODS
from .annealing import SCHEDULES

SEARCH_METHODS = ("epf", "pf", "best-of-n", "self-consistency")
_REWARD_FORMS = "self-certainty, self-certainty-entropy, MODULE:FUNCTION or prm:PATH"


def add_search_command(commands) -> None:
    from ..decoding.cli import add_sampler_flags, model_command

    p = model_command(
        commands, "search", "search for an answer with particle filtering, ePF, best-of-N or self-consistency",
        "Run an inference-time search for PROMPT and print the chosen answer (progress goes to stderr). "
        "Rewards: the model's own self-certainty (no reward model needed), a Python verifier "
        "MODULE:FUNCTION called as FUNCTION(prompt, partial_answer) -> [0, 1], or a local process reward "
        "model folder prm:PATH. Sampler flags set how particles are drawn (default: temperature 1).",
    )
    p.add_argument("prompt", help="the prompt text (a user message unless --raw)")
    p.add_argument("--method", choices=SEARCH_METHODS, default="epf", help="search method")
    p.add_argument("--particles", type=int, default=8, help="particles (or samples, for best-of-n and self-consistency)")
    p.add_argument("--reward", default="self-certainty",
                   help="self-certainty | self-certainty-entropy | MODULE:FUNCTION | prm:PATH")
    p.add_argument("--prm-head", choices=["sequence", "token"], default="sequence", help="head of a prm:PATH reward model")
    p.add_argument("--prm-step-token", default=None, help="step marker token of a token-head PRM")
    p.add_argument("--max-steps", type=int, default=8, help="steps per particle at most")
    p.add_argument("--max-step-tokens", type=int, default=128, help="tokens per step at most")
    p.add_argument("--max-new-tokens", type=int, default=512, help="tokens per answer at most")
    p.add_argument("--step-delimiter", default="\\n\\n", help="text that ends a step (backslash escapes allowed)")
    p.add_argument("--annealing", choices=SCHEDULES, default=None, help="resampling annealing (epf: ess; pf: none)")
    p.add_argument("--no-lookahead", action="store_true", help="epf without Look-ahead Modulation")
    p.add_argument("--resampling", choices=METHODS, default=None, help="epf: systematic; pf: multinomial")
    p.add_argument("--select", choices=SELECTIONS, default="best", help="final choice among particles")
    add_sampler_flags(p)
    p.add_argument("--seed", type=int, default=0, help="search seed (the same seed repeats the search)")
    p.add_argument("--raw", action="store_true", help="use the prompt as raw text instead of a chat message")
    p.add_argument("--json", action="store_true", help="print the whole SearchResult as JSON instead of the answer")


def load_reward(spec: str, args: argparse.Namespace):
    """The reward named on the command line."""
    from .rewards import ProcessRewardModel, SelfCertainty, StepVerifier

    if spec == "self-certainty":
        return SelfCertainty("logprob")
    if spec == "self-certainty-entropy":
        return SelfCertainty("entropy")
    if spec.startswith("prm:"):
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

        path = spec[len("prm:"):]
        auto = AutoModelForSequenceClassification if args.prm_head == "sequence" else AutoModelForTokenClassification
        try:
            model = auto.from_pretrained(path, local_files_only=True).eval()
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except OSError as error:
            raise FileNotFoundError(f"--reward prm:{path}: no reward model there ({error})") from None
        return ProcessRewardModel(model, tokenizer, head=args.prm_head, step_token=args.prm_step_token)
    if ":" not in spec.strip(":"):
        raise ValueError(f"--reward must be {_REWARD_FORMS}, got {spec!r}")
    return StepVerifier(load_callable(spec, "--reward"))


def _searcher(args: argparse.Namespace, model, tokenizer, chain):
    from .particle_filter import EntropicParticleFilter, ParticleFilter
    from .samples import BestOfN, SelfConsistency

    chat = not args.raw
    if args.method == "self-consistency":
        return SelfConsistency(model, tokenizer, n=args.particles, sampler=chain, max_new_tokens=args.max_new_tokens, chat=chat)
    reward = load_reward(args.reward, args)
    if args.method == "best-of-n":
        return BestOfN(model, tokenizer, reward, n=args.particles, sampler=chain, max_new_tokens=args.max_new_tokens, chat=chat)
    options = dict(
        n_particles=args.particles, step_delimiter=codecs.decode(args.step_delimiter, "unicode_escape"),
        max_steps=args.max_steps, max_step_tokens=args.max_step_tokens, max_new_tokens=args.max_new_tokens,
        sampler=chain, select=args.select, chat=chat,
    )
    for name in ("annealing", "resampling"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.method == "pf":
        return ParticleFilter(model, tokenizer, reward, lookahead=False, **options)
    return EntropicParticleFilter(model, tokenizer, reward, lookahead=not args.no_lookahead, **options)


def run_search_command(args: argparse.Namespace) -> int:
    from ..decoding.cli import chain_from_flags
    from ..decoding.loading import load_model

    chain = chain_from_flags(args)  # validate flags before spending seconds loading the model
    if args.reward not in ("self-certainty", "self-certainty-entropy") and ":" not in args.reward:
        raise ValueError(f"--reward must be {_REWARD_FORMS}, got {args.reward!r}")
    model, tokenizer = load_model(args.model)
    searcher = _searcher(args, model, tokenizer, chain)

    def progress(result, live: int) -> None:
        ess = f", ESS {result.ess_history[-1]:.2f}, T {result.temperature_history[-1]:.2f}" if result.ess_history else ""
        print(f"[step {result.steps}/{args.max_steps}] {live} live particles, {result.tokens_generated} tokens{ess}",
              file=sys.stderr, flush=True)

    if hasattr(searcher, "decoder"):
        result = searcher.run(args.prompt, seed=args.seed, on_step=progress)
    else:
        print(f"[sampling {args.particles} answers]", file=sys.stderr, flush=True)
        result = searcher.run(args.prompt, seed=args.seed)
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=1))
    else:
        print(result.answer)
        print(f"[{args.method}: {result.tokens_generated} tokens, {result.elapsed_s:.1f} s, answer from particle {result.best}"
              + (f", votes {result.votes}" if result.votes else "") + "]", file=sys.stderr)
    return 0
