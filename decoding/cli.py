"""The ``entrodec`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from transformers import LogitsProcessor

from ..search.cli import add_search_command, run_search_command
from ..train.cli import add_train_command, run_train_command

from .chain import SamplerChain
from .presets import available_presets, load_preset, preset_description, preset_switch
from .switch_spec import build_switch, check_switch_config
from .processors import MinP, Temperature, TopH, TopK, TopP

# transformers' order when sampling (temperature first) and llama.cpp's (temperature last).
ORDERS = {
    "hf": ("temperature", "top_h", "top_k", "top_p", "min_p"),
    "llama": ("top_k", "top_p", "min_p", "top_h", "temperature"),
}


def chain_from_flags(args: argparse.Namespace) -> SamplerChain | None:
    """The chain the sampler flags ask for, in ``--order``; ``None`` (greedy) when none is given."""
    makers = {
        "temperature": lambda: Temperature(args.temperature),
        "top_h": lambda: TopH(args.top_h, rule=args.top_h_rule),
        "top_k": lambda: TopK(args.top_k),
        "top_p": lambda: TopP(args.top_p),
        "min_p": lambda: MinP(args.min_p),
    }
    given = [name for name in ORDERS[args.order] if getattr(args, name) is not None]
    if args.preset is not None:
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"--preset cannot be combined with {flags}: write a YAML chain instead")
        return load_preset(args.preset)
    processors: list[LogitsProcessor] = [makers[name]() for name in given]
    return SamplerChain(processors) if processors else None


def switch_config_from_flags(args: argparse.Namespace) -> dict | None:
    """The ``switch:`` settings the flags (or the preset's ``switch:`` section) ask for; ``None`` for none."""
    flags = {"threshold_bits": args.switch_threshold, "window": args.switch_window, "min_dwell": args.switch_dwell,
             "entropy_of": args.switch_entropy_of}
    given = {k: v for k, v in flags.items() if v is not None}
    base = preset_switch(args.preset) if args.preset is not None else None
    if args.switch is None and base is None:
        if given:
            raise ValueError("--switch-threshold, --switch-window, --switch-dwell and --switch-entropy-of need --switch SMALL")
        return None
    config = dict(base or {})
    if args.switch is not None:
        config["small"] = args.switch
    if "threshold_bits" not in config and args.switch_threshold is None:
        raise ValueError("--switch needs --switch-threshold BITS: the rolling entropy at which the large model takes over")
    return check_switch_config({**config, **given}, "switch flags")


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    """The flags that build a sampler chain (read back by :func:`chain_from_flags`)."""
    p.add_argument("--temperature", type=float, default=None, help="temperature T >= 0 (0 is greedy)")
    p.add_argument("--top-h", type=float, default=None, help="Top-H alpha in (0, 1]; the paper's default is 0.4")
    p.add_argument("--top-h-rule", choices=["paper", "hf"], default="paper", help="Top-H rule: the paper's Algorithm 1 or transformers' released rule")
    p.add_argument("--min-p", type=float, default=None, help="min-p in [0, 1]")
    p.add_argument("--top-p", type=float, default=None, help="nucleus top-p in [0, 1]")
    p.add_argument("--top-k", type=int, default=None, help="top-k >= 0 (0 disables)")
    p.add_argument("--order", choices=sorted(ORDERS), default="hf", help="chain order: hf = temperature first, llama = temperature last")
    p.add_argument("--preset", default=None, help=f"a named sampler preset instead of the flags above: {', '.join(available_presets())}")


def model_command(commands, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that loads a model (``--model``), its defaults shown in ``--help``."""
    p = commands.add_parser(name, help=summary, description=description,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="model folder, cached Hugging Face id or .gguf file; default: SmolLM2-135M-Instruct")
    return p


def _add_generate(commands) -> None:
    p = model_command(
        commands, "generate", "generate text, streaming it to the terminal",
        "Generate a continuation of PROMPT with the default model (or --model) and stream it. "
        "With no sampler option the decoding is greedy.",
    )
    p.add_argument("prompt", help="the prompt text (a user message unless --raw)")
    add_sampler_flags(p)
    p.add_argument("--seed", type=int, default=None, help="random seed (same prompt and seed give the same text)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="at most this many new tokens")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable); cut from the output")
    p.add_argument("--raw", action="store_true", help="use the prompt as raw text instead of a chat message")
    p.add_argument("--stats", action="store_true", help="print tokens/s, mean entropy and mean kept-set size to stderr")
    g = p.add_argument_group("model switching (EAD): a small model writes while the rolling entropy stays low")
    g.add_argument("--switch", default=None, metavar="SMALL",
                   help="the small model: a model name/folder/.gguf, or draft:L[:N] for the first L layers of --model "
                        "distilled on N tokens of its own text (made once, then cached)")
    g.add_argument("--switch-threshold", type=float, default=None, metavar="BITS",
                   help="rolling-mean entropy in bits at which the large model takes over (needed with --switch)")
    g.add_argument("--switch-window", type=int, default=None, help="tokens in the rolling mean (default 5)")
    g.add_argument("--switch-dwell", type=int, default=None, help="tokens a model writes before the next switch (default 10)")
    g.add_argument("--switch-entropy-of", choices=["active", "small"], default=None,
                   help="whose entropy drives the rule: the writing model (default) or always the small one")


def _run_generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .loading import load_model

    chain = chain_from_flags(args)  # validate flags before spending seconds loading the model
    switch_config = switch_config_from_flags(args)
    model, tokenizer = load_model(args.model)
    switch = None if switch_config is None else build_switch(switch_config, model, tokenizer)
    stream = generate(
        model, tokenizer, args.prompt, sampler=chain, max_new_tokens=args.max_new_tokens, stop=args.stop,
        seed=args.seed, stream=True, chat=not args.raw, switch=switch,
    )
    for event in stream:
        sys.stdout.write(event.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    result = stream.result
    if args.stats and result is not None:
        row = result.telemetry[0]
        n = max(len(row.kept), 1)
        print(
            f"[{result.generated_tokens} tokens, {result.tokens_per_second:.1f} tok/s, finish={result.finish_reasons[0]}, "
            f"mean entropy {sum(row.entropy_before) / n:.3f} nats, mean kept {sum(row.kept) / n:.1f} tokens, "
            f"sampler {chain!r}]",
            file=sys.stderr,
        )
        summary = result.switch_summary()
        if summary is not None:
            print(f"[switching: {summary['large_fraction']:.0%} of tokens from the large model, estimated cost "
                  f"{summary['cost']:.2f} per position and {summary['cost_passes']:.2f} per pass of the large model "
                  f"alone, catch-up tokens {summary['catch_up_large']} large / {summary['catch_up_small']} small]",
                  file=sys.stderr)
    return 0


def _add_serve(commands) -> None:
    p = model_command(
        commands, "serve", "serve an OpenAI-compatible HTTP API",
        "Serve /v1/chat/completions, /v1/completions, /v1/models and /health with continuous batching. "
        "Every sampler of entrodec is a request field (see the README).",
    )
    p.add_argument("--name", default=None, help="the model name clients send; default: the model's folder name")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (other machines can reach the server only if you change it)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1 routes (or set ENTRODEC_API_KEY)")
    p.add_argument("--max-batch", type=int, default=16, help="rows decoded together at most (a request with n=4 is 4 rows)")
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait for room; more get 429 at once")
    p.add_argument("--max-tokens-cap", type=int, default=None, help="largest max_tokens a request may ask for; default: the model's context")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="longest prompt accepted (413 above); default: the model's context - 1")


def _run_serve(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    try:
        import uvicorn

        from ..serve import Limits, create_app
    except ImportError as error:
        raise ValueError(f"the server needs the `serve` extra ({error}): pip install 'entrodec[serve]'") from None
    from .loading import load_model

    for flag in ("max_batch", "max_queue", "max_tokens_cap", "max_prompt_tokens", "port"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "max_queue" else 1):
            raise ValueError(f"--{flag.replace('_', '-')} must be >= {0 if flag == 'max_queue' else 1}, got {value}")
    limits = Limits(args.max_batch, args.max_queue, args.max_tokens_cap, args.max_prompt_tokens)
    model, tokenizer = load_model(args.model)
    name = args.name or (Path(args.model).name if args.model else "SmolLM2-135M-Instruct")
    api_key = args.api_key or os.environ.get("ENTRODEC_API_KEY") or None
    app = create_app(model, tokenizer, name=name, api_key=api_key, limits=limits)
    print(f"entrodec: serving {name!r} on http://{args.host}:{args.port}/v1 (batch {args.max_batch})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _run_presets(args: argparse.Namespace) -> int:
    for name in available_presets():
        print(f"{name:10s} {preset_description(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entrodec", description="Entropy-aware decoding for causal language models.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_generate(commands)
    _add_serve(commands)
    add_search_command(commands)
    add_train_command(commands)
    commands.add_parser("presets", help="list the shipped sampler presets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {"generate": _run_generate, "serve": _run_serve, "search": run_search_command, "train": run_train_command,
               "presets": _run_presets}
    try:
        return runners[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as error:
        print(f"entrodec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
