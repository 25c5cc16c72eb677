"""The batching engine: one thread decodes every running request together.

A request becomes a :class:`Job` (its prompts, ``n``, sampler, seeds and limits). Between two decoding
steps the engine admits waiting jobs while the batch has room (their prompts are prefilled in one
forward pass and their rows join the running batch), draws one token for every row with that row's own
sampler and seed, reports each token to its job, and lets finished or abandoned rows leave. A row's
tokens depend only on its prompt, sampler and seed — the same as ``generate()`` gives — up to rounding
in the model's batched arithmetic.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..decoding import RowSamplers, SamplerChain
from ..decoding.continuation import Continuation, eos_ids, pad_id
from ..decoding.decode_batch import DecodeBatch
from ..decoding.draw import as_seed_tensor
from ..decoding.telemetry import StepTelemetry

log = logging.getLogger("entrodec.serve")


class QueueFull(Exception):
    """The engine's waiting line is full; the request should be retried later."""


@dataclass(frozen=True)
class TokenEvent:
    """One token of one choice. ``logprob`` is under the model's own distribution; ``top`` holds the
    most likely alternatives ``(token id, logprob)`` when the job asked for them."""

    choice: int
    text: str
    token_id: int
    logprob: float
    top: list[tuple[int, float]] | None
    entropy: float
    entropy_after: float
    kept: int
    temperature: float
    logprob_processed: float
    finish_reason: str | None


@dataclass(frozen=True)
class JobEnd:
    """The job's last event: every choice finished, or ``error`` says why it was abandoned."""

    error: str | None = None


@dataclass(eq=False)
class Job:
    prompts: list[list[int]]
    n: int
    sampler: SamplerChain | None
    seeds: list[int]  # one per row: prompt-major, then sample
    max_tokens: int
    stops: list[str]
    top_logprobs: int | None  # None: no alternatives needed
    ignore_eos: bool
    emit: Callable[[TokenEvent | JobEnd], None]
    cancelled: bool = False  # set by the server when the client goes away
    rows_left: int = field(default=0)

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n


class _Row:
    __slots__ = ("job", "choice", "seed", "step", "text")

    def __init__(self, job: Job, choice: int, tokenizer) -> None:
        self.job, self.choice, self.seed, self.step = job, choice, job.seeds[choice], 0
        self.text = Continuation(tokenizer, job.stops)


class Engine:
    """Decode jobs together on ``model``; ``max_batch`` rows at most, ``max_queue`` jobs waiting."""

    def __init__(self, model, tokenizer, max_batch: int = 16, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"`max_batch` must be >= 1 and `max_queue` >= 0, got {max_batch} and {max_queue}")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.eos = eos_ids(model, tokenizer)
        self._pad = pad_id(tokenizer, self.eos)
        self._batch = DecodeBatch(model, self._pad)
        self._rows: list[_Row] = []
        self._samplers: RowSamplers | None = None
        self._pending: deque[Job] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0

    # --- the server's side -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="entrodec-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raise :class:`QueueFull` at once when the waiting line is full."""
        if job.rows > self.max_batch:
            raise ValueError(f"a request may decode at most {self.max_batch} rows at once, this one needs {job.rows}")
        with self._wake:
            # with max_queue 0 a job is still taken when nothing waits and it fits now
            if len(self._pending) >= self.max_queue and (self._pending or self._room() < job.rows):
                raise QueueFull(f"{len(self._pending)} requests are already waiting")
            self._pending.append(job)
            self._wake.notify()

    def load(self) -> dict[str, int]:
        return {"running_rows": len(self._rows), "waiting_requests": len(self._pending), "max_batch": self.max_batch}

    # --- the engine thread -------------------------------------------------------------------
    def _room(self) -> int:
        return self.max_batch - len(self._rows)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._rows and not self._pending:
                    self._wake.wait()
                if self._stopping:
                    break
                joining = self._take_jobs()
            try:
                if joining:
                    self._join(joining)
                if self._rows:
                    self._step()
            except Exception as error:  # a fault must not kill the thread: fail the batch, go on
                log.exception("decoding step failed")
                self._fail_all([*self._running_jobs(), *joining], error)
        self._fail_all([*self._running_jobs(), *self._pending], RuntimeError("server stopped"))

    def _running_jobs(self) -> list[Job]:
        return list({id(row.job): row.job for row in self._rows}.values())

    def _take_jobs(self) -> list[Job]:
        taken, room = [], self._room()
        while self._pending and (self._pending[0].cancelled or self._pending[0].rows <= room):
            job = self._pending.popleft()
            if job.cancelled:
                continue
            taken.append(job)
            room -= job.rows
        return taken

    def _join(self, jobs: list[Job]) -> None:
        prompts = [p for job in jobs for p in job.prompts]
        repeats = [job.n for job in jobs for _ in job.prompts]
        self._batch.join(prompts, repeats)
        rows = [_Row(job, choice, self.tokenizer) for job in jobs for choice in range(job.rows)]
        for job in jobs:
            job.rows_left = job.rows
        self._rows.extend(rows)
        samplers = [row.job.sampler for row in rows]
        if self._samplers is None:
            self._samplers = RowSamplers(samplers)
        else:
            self._samplers.extend(samplers)

    def _step(self) -> None:
        rows, batch = self._rows, self._batch
        seeds = as_seed_tensor([r.seed for r in rows], len(rows), batch.device)
        steps = torch.tensor([r.step for r in rows], dtype=torch.int64, device=batch.device)
        with torch.inference_mode():
            tokens, telemetry = self._samplers.sample(batch.sequences, batch.logits, seeds, steps, lengths=batch.lengths)
            top = self._alternatives()
        chosen = tokens.tolist()
        self.steps += 1
        for k, row in enumerate(rows):
            if not row.job.cancelled:
                self._record(row, k, chosen[k], telemetry, top.get(k))
        keep = [k for k, row in enumerate(rows) if row.text.finish_reason is None and not row.job.cancelled]
        if len(keep) < len(rows):
            batch.select(keep)
            self._samplers.select_rows(keep)
            self._rows = [rows[k] for k in keep]
            if not keep:
                self._samplers = None
        if self._rows:
            batch.advance([chosen[k] for k in keep])

    def _record(self, row: _Row, k: int, token: int, telemetry: StepTelemetry, top) -> None:
        job = row.job
        if not math.isfinite(telemetry.logprob_after[k]):
            self._fail(job, ValueError("the sampler removed every token; check the sampling settings"))
            return
        row.step += 1
        is_eos = token in self.eos and not job.ignore_eos
        text = row.text.add(token, telemetry, k, is_eos, row.step >= job.max_tokens)
        job.emit(TokenEvent(
            choice=row.choice, text=text, token_id=token, logprob=float(telemetry.logprob_before[k]), top=top,
            entropy=float(telemetry.entropy_before[k]), entropy_after=float(telemetry.entropy_after[k]),
            kept=int(telemetry.kept[k]), temperature=float(telemetry.temperature[k]),
            logprob_processed=float(telemetry.logprob_after[k]), finish_reason=row.text.finish_reason,
        ))
        if row.text.finish_reason is not None:
            job.rows_left -= 1
            if job.rows_left == 0:
                job.emit(JobEnd())

    def _alternatives(self) -> dict[int, list[tuple[int, float]]]:
        """The most likely tokens of the rows whose jobs asked for them (one top-k for all)."""
        wanted = [(k, row.job.top_logprobs) for k, row in enumerate(self._rows) if row.job.top_logprobs]
        if not wanted:
            return {}
        index = torch.tensor([k for k, _ in wanted], device=self._batch.device)
        logprobs = torch.log_softmax(self._batch.logits[index].float(), dim=-1)
        values, ids = logprobs.topk(max(count for _, count in wanted), dim=-1)
        values, ids = values.tolist(), ids.tolist()
        return {k: list(zip(ids[i][:count], values[i][:count])) for i, (k, count) in enumerate(wanted)}

    def _fail(self, job: Job, error: Exception) -> None:
        if not job.cancelled:
            job.cancelled = True
            job.emit(JobEnd(error=str(error) or type(error).__name__))

    def _fail_all(self, jobs: list[Job], error: Exception) -> None:
        for job in jobs:
            self._fail(job, error)
        self._batch = DecodeBatch(self.model, self._pad)
        self._rows, self._samplers = [], None
