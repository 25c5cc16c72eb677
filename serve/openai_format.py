"""Engine events → OpenAI response bodies and stream chunks, for both endpoints.

``chat`` selects ``/v1/chat/completions`` shapes (``message`` / ``delta``, logprobs as ``content``
entries) over ``/v1/completions`` ones (``text``, the legacy parallel-list logprobs). With the
``telemetry`` extension every token also carries the entropy of the model's distribution, the entropy
after the sampler, the kept-set size, the temperature applied and the token's log-probability under
the processed distribution.
"""

from __future__ import annotations

import time
import uuid
from functools import lru_cache
from typing import Any

from .engine import TokenEvent

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}
TELEMETRY = ("entropy", "entropy_after", "kept", "temperature", "logprob_processed")


class TokenText:
    """Each token's own text, as logprobs show it (cached: the vocabulary is small, requests many)."""

    def __init__(self, tokenizer) -> None:
        self.text = lru_cache(maxsize=65536)(
            lambda token: tokenizer.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        )


class Choice:
    """What one choice has produced so far."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.text = ""
        self.tokens = 0
        self.finish_reason: str | None = None
        self.logprobs: list[dict[str, Any]] = []


class Formatter:
    """Shapes one request's response: ids, timestamps and the per-token logprob entries."""

    def __init__(self, chat: bool, model: str, tokens: TokenText, logprobs: int | None, telemetry: bool) -> None:
        self.chat, self.model, self.tokens = chat, model, tokens
        self.logprobs, self.telemetry = logprobs, telemetry
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs is not None or self.telemetry

    def entry(self, event: TokenEvent) -> dict[str, Any]:
        """The token's logprob entry (chat shape; the legacy shape is assembled from it)."""
        text = self.tokens.text(event.token_id)
        entry: dict[str, Any] = {"token": text, "logprob": event.logprob, "bytes": list(text.encode()),
                                 "top_logprobs": []}
        for token, logprob in event.top or ():
            alt = self.tokens.text(token)
            entry["top_logprobs"].append({"token": alt, "logprob": logprob, "bytes": list(alt.encode())})
        if self.telemetry:
            entry.update({name: getattr(event, name) for name in TELEMETRY})
        return entry

    def logprobs_body(self, entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any] | None:
        if not self.wants_logprobs:
            return None
        if self.chat:
            return {"content": entries, "refusal": None}
        body: dict[str, Any] = {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{a["token"]: a["logprob"] for a in e["top_logprobs"]} for e in entries],
            "text_offset": [],
        }
        for e in entries:
            body["text_offset"].append(offset)
            offset += len(e["token"])
        if self.telemetry:
            body.update({name: [e[name] for e in entries] for name in TELEMETRY})
        return body

    def choice_body(self, choice: Choice, prefix: str = "") -> dict[str, Any]:
        finish = FINISH.get(choice.finish_reason or "length")
        logprobs = self.logprobs_body(choice.logprobs, len(prefix))
        if self.chat:
            message = {"role": "assistant", "content": choice.text, "refusal": None}
            return {"index": choice.index, "message": message, "logprobs": logprobs, "finish_reason": finish}
        return {"index": choice.index, "text": prefix + choice.text, "logprobs": logprobs, "finish_reason": finish}

    def response(self, choices: list[Choice], usage: dict[str, int], prefixes: list[str] | None = None) -> dict[str, Any]:
        bodies = [self.choice_body(c, prefixes[c.index] if prefixes else "") for c in choices]
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": bodies, "usage": usage, "system_fingerprint": None}

    def chunk(self, index: int, text: str | None, entries: list[dict[str, Any]] | None, finish: str | None,
              role: bool = False, with_usage: bool = False) -> dict[str, Any]:
        """One stream chunk for choice ``index``: new text, its logprob entries, or the finish reason."""
        logprobs = self.logprobs_body(entries) if entries is not None else None
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": FINISH.get(finish)}
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": FINISH.get(finish)}
        body = {"id": self.id, "object": self.chunk_object,
                "created": self.created, "model": self.model, "choices": [choice], "system_fingerprint": None}
        if with_usage:
            body["usage"] = None
        return body

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {"id": self.id, "object": self.chunk_object,
                "created": self.created, "model": self.model, "choices": [], "usage": usage,
                "system_fingerprint": None}


def usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, int]:
    completion = sum(c.tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}
