"""The FastAPI application: routes, limits, authentication, and the bridge to the engine thread."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..decoding.prompts import encode_prompt
from .engine import Engine, Job, JobEnd, QueueFull, TokenEvent
from .errors import APIError, bad_request, install_handlers
from .openai_format import Choice, Formatter, TokenText, usage
from .request_sampler import SharedSamplers
from .schema import ChatRequest, CompletionRequest, Sampling, parse


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. ``None`` caps default to the model's context."""

    max_batch: int = 16
    max_queue: int = 64
    max_tokens_cap: int | None = None
    max_prompt_tokens: int | None = None
    max_body_bytes: int = 1 << 20


class _Server:
    """Everything the routes share: model, engine, limits, the served name and the API key."""

    def __init__(self, model, tokenizer, name: str, api_key: str | None, limits: Limits) -> None:
        self.tokenizer, self.name, self.api_key, self.limits = tokenizer, name, api_key, limits
        self.engine = Engine(model, tokenizer, limits.max_batch, limits.max_queue)
        self.context = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        self.vocab = model.get_output_embeddings().weight.shape[0]
        self.tokens = TokenText(tokenizer)
        self.samplers = SharedSamplers()
        self.created = int(time.time())

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", code="invalid_api_key")

    async def body(self, request: Request) -> Any:
        """The JSON body, read up to the size limit."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise APIError(413, f"request body over {self.limits.max_body_bytes} bytes", code="request_too_large")
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > self.limits.max_body_bytes:
                raise APIError(413, f"request body over {self.limits.max_body_bytes} bytes", code="request_too_large")
        try:
            body = json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as error:
            raise bad_request(f"the body is not valid JSON: {error}", code="invalid_json") from None
        try:  # JSON may spell lone surrogates ("\ud800"), which no tokenizer can encode
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("the body holds a string that is not valid Unicode (a lone surrogate)",
                              code="invalid_json") from None
        return body

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.name:
            raise APIError(404, f"model {name!r} is not served here; this server serves {self.name!r}", "model",
                           "model_not_found")

    def encode_chat(self, req: ChatRequest) -> list[list[int]]:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        try:
            return [encode_prompt(self.tokenizer, messages, chat=True)]
        except Exception as error:  # the chat template may reject a conversation's shape
            raise bad_request(f"the conversation cannot be formatted: {error}", "messages") from None

    def encode_completion(self, req: CompletionRequest) -> list[list[int]]:
        prompts = req.prompts()
        self.check_rows(len(prompts), req.n)  # before tokenising what would be refused anyway
        encoded = []
        for position, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                ids = encode_prompt(self.tokenizer, prompt, chat=False)
            else:
                if any(not 0 <= t < self.vocab for t in prompt):
                    raise bad_request(f"prompt {position} has token ids outside [0, {self.vocab})", "prompt")
                ids = list(prompt)
            if not ids:
                raise bad_request(f"prompt {position} encodes to no tokens", "prompt")
            encoded.append(ids)
        return encoded

    def token_limit(self, req: Sampling, requested: int | None, prompts: list[list[int]]) -> int:
        longest = max(len(p) for p in prompts)
        prompt_cap = self.limits.max_prompt_tokens or self.context - 1
        if longest > prompt_cap:
            raise APIError(413, f"the prompt has {longest} tokens; this server takes at most {prompt_cap}",
                           "messages" if isinstance(req, ChatRequest) else "prompt", "prompt_too_long")
        room = self.context - longest
        cap = min(self.limits.max_tokens_cap or room, room)
        param = "max_completion_tokens" if isinstance(req, ChatRequest) and req.max_completion_tokens else "max_tokens"
        if requested is None:
            if cap < 1:
                raise bad_request("the prompt fills the model's context", param, "context_length_exceeded")
            return cap
        if self.limits.max_tokens_cap is not None and requested > self.limits.max_tokens_cap:
            raise bad_request(f"`{param}` is {requested}; this server allows at most {self.limits.max_tokens_cap}",
                              param, "invalid_value")
        if requested > room:
            raise bad_request(f"prompt ({longest} tokens) + `{param}` ({requested}) exceeds the model's context of "
                              f"{self.context} tokens", param, "context_length_exceeded")
        return requested

    def check_rows(self, prompts: int, n: int) -> None:
        if prompts * n > self.limits.max_batch:
            raise bad_request(f"{prompts} prompt(s) × n={n} is {prompts * n} rows; this server decodes at most "
                              f"{self.limits.max_batch} at once", "n")

    def job(self, req: Sampling, prompts: list[list[int]], emit) -> Job:
        self.check_rows(len(prompts), req.n)
        base = req.seed if req.seed is not None else secrets.randbits(63)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return Job(
            prompts=prompts, n=req.n, sampler=self.samplers(req), seeds=[base + j for _ in prompts for j in range(req.n)],
            max_tokens=self.token_limit(req, req.token_limit(), prompts), stops=stops,
            top_logprobs=req.logprob_count() or None, ignore_eos=req.ignore_eos, emit=emit,
        )


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


async def _run(server: _Server, request: Request, req: Sampling, prompts: list[list[int]], chat: bool):
    events: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def emit(event: TokenEvent | JobEnd) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (shutdown)
            pass

    job = server.job(req, prompts, emit)
    formatter = Formatter(chat, server.name, server.tokens, req.logprob_count(), req.telemetry)
    prefixes = None
    if not chat and getattr(req, "echo", False):
        prefixes = [server.tokenizer.decode(p, skip_special_tokens=True) for p in prompts for _ in range(req.n)]
    try:
        server.engine.submit(job)
    except QueueFull as error:
        raise APIError(429, f"the server is busy ({error}); retry shortly", code="queue_full") from None
    prompt_tokens = sum(len(p) for p in prompts)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        stream = _stream(job, events, formatter, job.rows, prompt_tokens, include_usage, prefixes)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await _collect(request, job, events, formatter, prompt_tokens, prefixes)


def _apply(choices: list[Choice], event: TokenEvent, formatter: Formatter) -> dict[str, Any] | None:
    choice = choices[event.choice]
    choice.text += event.text
    choice.tokens += 1
    choice.finish_reason = event.finish_reason
    if formatter.wants_logprobs:
        entry = formatter.entry(event)
        choice.logprobs.append(entry)
        return entry
    return None


async def _collect(request: Request, job: Job, events: asyncio.Queue, formatter: Formatter, prompt_tokens: int,
                   prefixes: list[str] | None) -> JSONResponse:
    choices = [Choice(i) for i in range(job.rows)]
    watcher = asyncio.create_task(_watch_disconnect(request, job))
    try:
        while True:
            event = await events.get()
            if isinstance(event, JobEnd):
                if event.error is not None:
                    raise APIError(500, f"decoding failed: {event.error}", code="decoding_failed")
                break
            _apply(choices, event, formatter)
    finally:
        watcher.cancel()
        job.cancelled = job.cancelled or any(c.finish_reason is None for c in choices)
    return JSONResponse(formatter.response(choices, usage(prompt_tokens, choices), prefixes))


async def _watch_disconnect(request: Request, job: Job) -> None:
    while not job.cancelled:
        if await request.is_disconnected():
            job.cancelled = True
            return
        await asyncio.sleep(0.25)


def _sse(body: dict[str, Any] | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body, separators=(',', ':'))}\n\n"


async def _stream(job: Job, events: asyncio.Queue, formatter: Formatter, rows: int, prompt_tokens: int,
                  include_usage: bool, prefixes: list[str] | None) -> AsyncIterator[str]:
    choices = [Choice(i) for i in range(rows)]
    try:
        for choice in choices:  # the role (chat) or the echoed prompt (completions) opens each choice
            if formatter.chat:
                yield _sse(formatter.chunk(choice.index, "", None, None, role=True, with_usage=include_usage))
            elif prefixes:
                yield _sse(formatter.chunk(choice.index, prefixes[choice.index], None, None, with_usage=include_usage))
        while True:
            event = await events.get()
            if isinstance(event, JobEnd):
                if event.error is not None:
                    yield _sse(APIError(500, f"decoding failed: {event.error}", code="decoding_failed").body())
                break
            entry = _apply(choices, event, formatter)
            if event.text or entry is not None:
                yield _sse(formatter.chunk(event.choice, event.text, None if entry is None else [entry], None,
                                           with_usage=include_usage))
            if event.finish_reason is not None:
                yield _sse(formatter.chunk(event.choice, None if formatter.chat else "", None, event.finish_reason,
                                           with_usage=include_usage))
        if include_usage:
            yield _sse(formatter.usage_chunk(usage(prompt_tokens, choices)))
        yield _sse("[DONE]")
    finally:  # a client that went away mid-stream frees its rows at the next step
        job.cancelled = job.cancelled or any(c.finish_reason is None for c in choices)


def create_app(model, tokenizer, name: str = "SmolLM2-135M-Instruct", api_key: str | None = None,
               limits: Limits | None = None) -> FastAPI:
    """The OpenAI-compatible app for ``model``; the engine thread runs while the app does.

    Example:
        >>> from entrodec.decoding import load_model              # doctest: +SKIP
        >>> from entrodec.serve import create_app                 # doctest: +SKIP
        >>> import uvicorn                                        # doctest: +SKIP
        >>> uvicorn.run(create_app(*load_model()), host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    server = _Server(model, tokenizer, name, api_key, limits or Limits())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.engine.start()
        yield
        server.engine.stop()

    app = FastAPI(title="entrodec", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    install_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": server.name, **server.engine.load()}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        server.authorize(request)
        card = {"id": server.name, "object": "model", "created": server.created, "owned_by": "entrodec"}
        return {"object": "list", "data": [card]}

    async def answer(request: Request, schema: type[Sampling], encode, chat: bool):
        server.authorize(request)
        req = parse(schema, await server.body(request))
        server.check_model(req.model)
        prompts = await run_in_threadpool(encode, req)  # tokenising a long prompt must not stall other streams
        return await _run(server, request, req, prompts, chat)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer(request, ChatRequest, server.encode_chat, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, CompletionRequest, server.encode_completion, chat=False)

    return app
