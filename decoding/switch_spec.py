"""Model switching from the command line and from YAML presets.

The small model is named by a string: a model ``load_model`` can find (folder, cached id, ``.gguf``),
or ``draft:L`` / ``draft:L:N`` for :func:`make_draft` of the large model with ``L`` layers, distilled
on ``N`` tokens (cached after the first time). A YAML ``switch:`` section reads::

    switch: {small: "draft:8:16000", threshold_bits: 1.5, window: 5, min_dwell: 10, entropy_of: active}
"""

from __future__ import annotations

from typing import Any

from .switch import ModelSwitch

SWITCH_KEYS = ("small", "threshold_bits", "window", "min_dwell", "entropy_of")


def parse_small(spec: str) -> tuple[int, int] | str:
    """``(layers, distill_tokens)`` for ``draft:L[:N]``, else the model name unchanged."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"the small model must be a model name or draft:LAYERS[:DISTILL_TOKENS], got {spec!r}")
    if not spec.startswith("draft:"):
        return spec
    parts = spec.split(":")[1:]
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ValueError(f"a draft is written draft:LAYERS or draft:LAYERS:DISTILL_TOKENS (e.g. draft:8:16000), got {spec!r}")
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else 0


def check_switch_config(config: Any, source: str) -> dict[str, Any]:
    """The ``switch:`` mapping, its keys and small-model string checked before any model loads."""
    if not isinstance(config, dict):
        raise ValueError(f"{source}: `switch` must be a mapping with keys {', '.join(SWITCH_KEYS)}")
    unknown = sorted(set(config) - set(SWITCH_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown `switch` key(s) {', '.join(unknown)}; known: {', '.join(SWITCH_KEYS)}")
    for key in ("small", "threshold_bits"):
        if key not in config:
            raise ValueError(f"{source}: `switch` needs `{key}`")
    parse_small(config["small"])
    return dict(config)


def build_switch(config: dict[str, Any], large_model, tokenizer) -> ModelSwitch:
    """A :class:`ModelSwitch` for ``large_model`` from a checked ``switch:`` mapping (loads or makes the
    small model)."""
    from .draft import make_draft
    from .loading import load_model

    small = parse_small(config["small"])
    parameter = next(large_model.parameters())
    small_tokenizer = None
    if isinstance(small, tuple):
        layers, distill_tokens = small
        small_model = make_draft(large_model, layers=layers, distill_tokens=distill_tokens, tokenizer=tokenizer)
    else:
        small_model, small_tokenizer = load_model(small, device=parameter.device, dtype=parameter.dtype)
    options = {k: config[k] for k in ("window", "min_dwell", "entropy_of") if k in config}
    return ModelSwitch(small_model, config["threshold_bits"], tokenizer=small_tokenizer, **options)
