"""Request bodies of the OpenAI endpoints, with our extensions; anything else is refused.

Types are strict (``"n": "2"`` or ``"temperature": true`` are errors, not coerced), numbers finite, and
unknown fields rejected, so a client learns at once that a setting was not understood.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import bad_request

_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
SEED_RANGE = (-(2**63), 2**64 - 1)

# Sampler fields that build a processor; ``samplers`` orders them (transformers' order by default).
SAMPLER_FIELDS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "top_h", "epsilon_cutoff", "eta_cutoff",
                  "top_n_sigma")


class StreamOptions(BaseModel):
    model_config = _CONFIG
    include_usage: bool = False


class Sampling(BaseModel):
    """Fields shared by both endpoints: the OpenAI ones, then vLLM/llama.cpp extensions, then ours."""

    model_config = _CONFIG

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=64)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=10.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    user: str | None = None
    # vLLM / llama.cpp names
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    dynatemp_range: float | None = Field(None, ge=0.0)
    dynatemp_exponent: float | None = Field(None, gt=0.0)
    top_n_sigma: float | None = Field(None, gt=0.0)
    samplers: list[str] | None = None
    ignore_eos: bool = False
    # entrodec
    top_h: float | None = Field(None, gt=0.0, le=1.0)
    top_h_rule: Literal["paper", "hf"] | None = None
    epsilon_cutoff: float | None = Field(None, gt=0.0, lt=1.0)
    eta_cutoff: float | None = Field(None, gt=0.0, lt=1.0)
    entropy_temperature: Literal["dynatemp", "edt", "hapo"] | None = None
    edt_theta: float | None = Field(None, gt=0.0)
    edt_base: float | None = Field(None, gt=0.0, lt=1.0)
    hapo_tau: float | None = Field(None, ge=0.0, le=1.0)
    hapo_pivot: float | None = Field(None, ge=0.0, le=1.0)
    hapo_window: int | None = Field(None, ge=2, le=4096)
    sampler: Union[str, list[dict[str, Any]], None] = None
    telemetry: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or any(s == "" for s in stops)):
            raise ValueError("`stop` takes at most 4 non-empty strings")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalties(cls, value):
        if value not in (None, 0.0):
            raise ValueError("non-zero presence/frequency penalties are not supported by this server")
        return value

    @field_validator("samplers")
    @classmethod
    def _order(cls, value):
        if value is not None:
            unknown = [name for name in value if name not in SAMPLER_FIELDS]
            if unknown or len(set(value)) != len(value):
                raise ValueError(f"`samplers` lists each of {', '.join(SAMPLER_FIELDS)} at most once; got {value}")
        return value

    # Checks across fields raise the 400 themselves (pydantic passes non-ValueErrors through), so that
    # the error can name the parameter.
    @model_validator(mode="after")
    def _consistent(self):
        if self.stream_options is not None and not self.stream:
            raise bad_request("`stream_options` is only allowed with `stream: true`", "stream_options")
        return self


class ContentPart(BaseModel):
    model_config = _CONFIG
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = _CONFIG
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart]]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("`top_logprobs` needs `logprobs: true`", "top_logprobs")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise bad_request("give `max_tokens` or `max_completion_tokens`, not both", "max_completion_tokens")
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def logprob_count(self) -> int | None:
        """``None`` for no log-probabilities, else how many alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None


TokenIds = list[int]


class CompletionRequest(Sampling):
    prompt: Union[str, list[str], TokenIds, list[TokenIds]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value):
        if isinstance(value, list) and (not value or any(isinstance(p, list) and not p for p in value)):
            raise ValueError("`prompt` must not be empty")
        return value

    def token_limit(self) -> int | None:
        return self.max_tokens

    def logprob_count(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list of strings and/or token-id lists."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]
        return list(self.prompt)


def _param(loc: tuple) -> str:
    """A readable parameter path from pydantic's location, without its union-branch tags."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and part not in {"str", "int", "float", "bool", "list", "dict"}:
            path += f".{part}" if path else part
    return path or None


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate a decoded JSON body, turning the first problem into a 400 that names its parameter."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        param = _param(first["loc"])
        kind = first["type"]
        if kind == "extra_forbidden":
            raise bad_request(f"unknown field `{param}`", param, "unknown_field") from None
        if kind == "missing":
            raise bad_request(f"`{param}` is required", param, "missing_required_parameter") from None
        message = first["msg"].removeprefix("Value error, ")
        raise bad_request(f"`{param}`: {message}" if param else message, param, "invalid_value") from None
