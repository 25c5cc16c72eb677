"""The training loop. One step: roll out, score, compute advantages, then a few optimiser updates on
the clipped objective with the run's entropy control; log, checkpoint.

Read :meth:`Trainer.step` top to bottom for the whole algorithm.
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from ..decoding import SamplerChain, Temperature
from ..decoding.continuation import eos_ids, pad_id
from ..decoding.processors import EntropyTemperature
from ..decoding.sampler_spec import resolve_sampler
from ..decoding.presets import chain_from_config
from . import distributed
from .checkpoint import append_metrics, load_checkpoint, read_metrics, save_checkpoint, truncate_metrics
from .config import TrainConfig, config_from_dict
from .entropy_control import EntropyControl, TokenPlan, TokenStats, aepo_advantages, make_control, policy_loss
from .logprobs import check_recomputable, forward_logits, processed_logprobs, token_entropy, token_logprobs
from .models import build_model
from .objective import aggregate, group_advantages, k3_kl, masked_mean
from .rollout import Rollouts, TokenBatch, pack, roll_out
from .tasks import Task, make_task

CONFIG_FILE = "config.yaml"


def _chain(spec: Any) -> SamplerChain:
    chain = chain_from_config(spec, "sampler") if isinstance(spec, list) else resolve_sampler(spec)
    if not isinstance(chain, SamplerChain):
        raise ValueError(f"`sampler` must be a preset name or a chain of processors, got {spec!r}")
    return chain


def _row_seed(seed: int, step: int, rank: int, row: int) -> int:
    return random.Random(f"{seed}/{step}/{rank}/{row}").getrandbits(62)


class Trainer:
    """Entropy-controlled GRPO on one process, or many under ``torchrun``.

    ``model``/``tokenizer`` replace the config's model (the trainer updates the model in place); ``task``
    (any object with ``examples(seed, step, count)`` and ``reward(example, completion)``) replaces the
    config's task.

    Example (a smoke test with a tiny random model, about half a minute on CPU):
        >>> from entrodec.train import Trainer, load_preset          # doctest: +SKIP
        >>> history = Trainer(load_preset("tiny"), "runs/tiny").run()  # doctest: +SKIP
        >>> history[-1]["reward_mean"], history[-1]["entropy_mean"]    # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, output: str | Path, model=None, tokenizer=None, task: Task | None = None,
                 progress: bool = True) -> None:
        self.config = config.check()
        self.output = Path(output)
        self.processes = distributed.start()
        self.progress = progress and self.processes.main
        self.task = make_task(**config.task) if task is None else task
        self.chain = _chain(config.sampler)
        if config.behaviour.mode == "recompute":
            check_recomputable(self.chain)
        self.control: EntropyControl = make_control(**config.entropy_control)
        self.control.auxiliary_prompts(config.rollout.prompts_per_step)  # fails now, not at the first step
        for message in self.control.warnings(config.updates_per_rollout):
            warnings.warn(message, stacklevel=2)
        if model is None:
            model, tokenizer = build_model(config.model, config.seed, self.processes.device)
        self.model, self.tokenizer = model, tokenizer
        self.pad = pad_id(tokenizer, eos_ids(model, tokenizer))
        self.reference = copy.deepcopy(model).eval().requires_grad_(False) if config.loss.kl_coef > 0 else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        self.trained = model
        if self.processes.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.trained = DistributedDataParallel(model)
        self.hapo = [p for p in self.chain if isinstance(p, EntropyTemperature) and p.kind == "hapo"]
        self.previous_entropies: list[float] | None = None
        self.auxiliary_temperature = 0.0
        self.steps_done = 0

    # ------------------------------------------------------------------ the run
    def run(self, steps: int | None = None, resume: bool = False) -> list[dict[str, Any]]:
        """Train until ``steps`` steps are done (default ``config.steps``), resuming from the output folder's
        checkpoint when ``resume``; returns every step's metrics so far."""
        total = self.config.steps if steps is None else steps
        self._prepare_output(resume)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.steps_done, desc="train", unit="step", file=sys.stderr)
        try:
            while self.steps_done < total:
                metrics = self.step(self.steps_done)
                self.steps_done += 1
                if self.processes.main:
                    append_metrics(self.output, metrics)
                if self.steps_done % self.config.checkpoint_every == 0 or self.steps_done == total:
                    self.save()
                if bar is not None:
                    bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", entropy=f"{metrics['entropy_mean']:.3f}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        history = read_metrics(self.output)
        if self.processes.main:
            self._finish(history)
        self.processes.barrier()
        return history

    def step(self, step: int) -> dict[str, Any]:
        """One GRPO step; returns its metrics."""
        started = time.perf_counter()
        rollouts = self._roll_out(step)
        rolled_out = time.perf_counter()
        advantages = self._advantages(rollouts)
        batch = pack(rollouts, self.pad, self.processes.device)
        # π_old is the model that drew the rollouts: its log-probs were recorded in the same forward that
        # sampled each token (processed ones under `recompute`), so no extra forward is needed.
        old_logp = batch.behaviour_logp if self.config.behaviour.mode == "recompute" else batch.model_logp
        ref_logp = self._reference_logprobs(batch)
        is_weight = self._importance_weights(batch, old_logp)
        mask = batch.mask & ~(batch.reinforce & (advantages == 0).view(-1, 1))  # AEPO keeps positive samples only
        stats = TokenStats(old_logp, advantages.view(-1, 1).expand_as(old_logp) * batch.mask, mask,
                           batch.entropy, batch.reinforce)
        updates = self._update(step, batch, stats, is_weight, ref_logp)
        main = ~torch.tensor(rollouts.auxiliary)
        entropy_mean = _mean(self.previous_entropies)
        self.control.after_step(entropy_mean)
        record = {
            "step": step,
            "reward_mean": float(rollouts.rewards[main].mean()),
            "reward_std": float(rollouts.rewards[main].std()) if int(main.sum()) > 1 else 0.0,
            "entropy_mean": entropy_mean,
            "kept_mean": _mean([k for row, a in zip(rollouts.kept, rollouts.auxiliary) if not a for k in row]),
            "completion_tokens": _mean([len(c) for c, a in zip(rollouts.completion_ids, rollouts.auxiliary) if not a]),
            "is_weight_mean": masked_mean(is_weight, batch.mask & ~batch.reinforce),
            "is_capped": masked_mean((is_weight >= self.config.behaviour.cap).float(), batch.mask & ~batch.reinforce)
            if self.config.behaviour.mode == "truncated-is" else 0.0,
            "auxiliary_rows": int((~main).sum()),
            "auxiliary_kept": int(((advantages.cpu() > 0) & ~main).sum()),
            "auxiliary_temperature": self.auxiliary_temperature,
            **updates,
        }
        record = self._all_ranks(record)
        record["rollout_s"] = rolled_out - started
        record["elapsed_s"] = time.perf_counter() - started
        return record

    # ------------------------------------------------------------------ rollouts
    def _roll_out(self, step: int) -> Rollouts:
        cfg, rank = self.config, self.processes.rank
        task_seed = cfg.seed if self.processes.world == 1 else cfg.seed * 1000 + rank
        examples = self.task.examples(task_seed, step, cfg.rollout.prompts_per_step)
        seeds = [_row_seed(cfg.seed, step, rank, i) for i in range(len(examples))]
        if self.hapo and cfg.rollout.hapo_from_previous and self.previous_entropies:
            for processor in self.hapo:
                processor.set_statistics(torch.tensor(self.previous_entropies))
        temperature = self.control.rollout_temperature()
        aux = self.control.auxiliary_prompts(len(examples))
        self.auxiliary_temperature = float(temperature) if aux else 0.0
        model = self.model.eval()
        group, limit = cfg.rollout.group_size, cfg.rollout.max_new_tokens
        rollouts = roll_out(model, self.tokenizer, self.task, examples[aux:], self.chain, group, limit, seeds[aux:])
        if aux:  # AEPO: part of the batch drawn hotter or cooler than the chain, to steer entropy
            heated = SamplerChain([Temperature(temperature), *self.chain])
            rollouts = rollouts + roll_out(model, self.tokenizer, self.task, examples[:aux], heated, group, limit,
                                           seeds[:aux], auxiliary=True)
        self.previous_entropies = [h for row, a in zip(rollouts.entropy, rollouts.auxiliary) if not a for h in row]
        return rollouts

    def _advantages(self, rollouts: Rollouts) -> torch.Tensor:
        group = self.config.rollout.group_size
        main = ~torch.tensor(rollouts.auxiliary)
        advantages = torch.zeros(len(rollouts))
        advantages[main] = group_advantages(rollouts.rewards[main], group)
        if not bool(main.all()):
            advantages[~main] = aepo_advantages(rollouts.rewards[~main], group)
        return advantages.to(self.processes.device)

    # ------------------------------------------------------------------ log-probs
    def _chunks(self, rows: torch.Tensor, parts: int) -> list[torch.Tensor]:
        return [c for c in torch.tensor_split(rows, min(parts, rows.numel())) if c.numel()]

    def _policy_logprobs(self, model, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw log-probs, the log-probs the objective uses (raw, or processed under ``recompute``), whether
        each token is in the processed support, and the logits."""
        logits = forward_logits(model, batch.input_ids, batch.attention_mask, batch.first)
        raw = token_logprobs(logits, batch.targets)
        if self.config.behaviour.mode != "recompute":
            return raw, raw, batch.mask, logits
        used, support = processed_logprobs(logits, batch.targets, batch.mask & ~batch.reinforce, self.chain)
        return raw, torch.where(batch.reinforce, raw, used), support | batch.reinforce, logits

    @torch.no_grad()
    def _reference_logprobs(self, batch: TokenBatch) -> torch.Tensor | None:
        """log π_ref of every token (``None`` without a KL term), computed in micro-batches."""
        if self.reference is None:
            return None
        ref = torch.zeros_like(batch.model_logp)
        rows = torch.arange(batch.input_ids.shape[0])
        for chunk in self._chunks(rows, self.config.optim.mini_batches * self.config.optim.grad_accum):
            part = batch.rows(chunk)
            logits = forward_logits(self.reference, part.input_ids, part.attention_mask, part.first)
            ref[chunk] = token_logprobs(logits, part.targets)
        return ref

    def _importance_weights(self, batch: TokenBatch, old_logp: torch.Tensor) -> torch.Tensor:
        """Truncated importance weights min(π_old(a) / μ(a), C) for ``truncated-is``; ones otherwise (and
        always for AEPO's auxiliary rows)."""
        weights = torch.ones_like(old_logp)
        if self.config.behaviour.mode == "truncated-is":
            ratio = torch.exp((old_logp - batch.behaviour_logp).clamp(max=30.0))
            weights = torch.where(batch.mask & ~batch.reinforce, ratio.clamp(max=self.config.behaviour.cap), weights)
        return weights

    # ------------------------------------------------------------------ updates
    def _update(self, step: int, batch: TokenBatch, stats: TokenStats, is_weight: torch.Tensor,
                ref_logp: torch.Tensor | None) -> dict[str, float]:
        """``epochs`` passes over the rollouts in ``mini_batches`` optimiser updates, each accumulated over
        ``grad_accum`` micro-batches."""
        cfg = self.config
        generator = torch.Generator().manual_seed(_row_seed(cfg.seed, step, 0, -1))
        self.model.train()
        totals: dict[str, list[float]] = {}
        for _ in range(cfg.optim.epochs):
            order = torch.randperm(batch.input_ids.shape[0], generator=generator).to(batch.input_ids.device)
            for mini in self._chunks(order, cfg.optim.mini_batches):
                plan = self.control.plan(stats.rows(mini), generator)
                loss_mask = plan.loss_mask
                normaliser, rows = float(loss_mask.sum()), mini.numel()
                micro_parts = self._chunks(torch.arange(mini.numel()), cfg.optim.grad_accum)
                for position, micro in enumerate(micro_parts):
                    last = position == len(micro_parts) - 1
                    with self._sync(last):
                        values = self._micro_step(batch.rows(mini[micro]), stats.rows(mini), plan, micro, is_weight[mini],
                                                  None if ref_logp is None else ref_logp[mini], normaliser, rows)
                    for key, value in values.items():
                        totals.setdefault(key, []).append(value)
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                totals.setdefault("grad_norm", []).append(float(norm))
                totals.setdefault("picked_tokens", []).append(plan.picked())
                totals.setdefault("loss_token_fraction", []).append(normaliser / max(float(stats.rows(mini).mask.sum()), 1.0))
        self.model.eval()
        return {key: _mean(values) for key, values in totals.items()}

    def _sync(self, last: bool):
        """DDP averages gradients on the last micro-batch of an update only."""
        if self.trained is self.model or last:
            return contextlib.nullcontext()
        return self.trained.no_sync()

    def _micro_step(self, part: TokenBatch, mini_stats: TokenStats, mini_plan: TokenPlan, micro: torch.Tensor, is_weight: torch.Tensor,
                    ref_logp: torch.Tensor | None, normaliser: float, rows: int) -> dict[str, float]:
        """Forward, loss and backward of one micro-batch; its share of the mini-batch's loss."""
        cfg = self.config
        stats, plan = mini_stats.rows(micro), mini_plan.rows(micro)
        raw, logp, support, logits = self._policy_logprobs(self.trained, part)
        per_token = policy_loss(logp, stats, plan, cfg.loss.eps_low, cfg.loss.eps_high) * is_weight[micro]
        kl = torch.zeros_like(raw)
        if ref_logp is not None:
            kl = k3_kl(ref_logp[micro], raw)
            per_token = per_token + cfg.loss.kl_coef * kl
        mask = plan.loss_mask & support
        loss = aggregate(per_token, mask, cfg.loss.aggregation, normaliser, rows)
        if self.control.bonus() > 0:
            entropy = token_entropy(logits)
            loss = loss - self.control.bonus() * aggregate(entropy, mask, cfg.loss.aggregation, normaliser, rows)
        loss.backward()
        with torch.no_grad():
            ratio = torch.exp(logp - stats.old_logp)
            ppo = mask & ~stats.reinforce
            advantages = stats.advantages
            clipping = float(plan.clip)  # KL-Cov never clips
            return {
                "loss": float(loss) * len(micro) / max(rows, 1),
                "clip_low": clipping * masked_mean(((ratio < 1 - cfg.loss.eps_low) & (advantages < 0)).float(), ppo),
                "clip_high": clipping * masked_mean(((ratio > 1 + cfg.loss.eps_high) & (advantages > 0)).float(), ppo),
                "kl_ref": masked_mean(kl.detach(), ppo),
            "ratio_deviation": masked_mean((ratio - 1).abs(), ppo),
                "outside_support": masked_mean((~support).float(), part.mask),
                "bonus_coef": self.control.bonus(),
            }

    # ------------------------------------------------------------------ output
    def _prepare_output(self, resume: bool) -> None:
        out = self.output
        if resume:
            state = load_checkpoint(out)
            self.load_state(state)
            if self.processes.main:
                truncate_metrics(out, self.steps_done)
        elif self.processes.main:
            if (out / "metrics.jsonl").exists() or (out / "checkpoint.pt").exists():
                raise FileExistsError(f"{str(out)!r} already holds a run; resume it (--resume) or choose another --output")
            out.mkdir(parents=True, exist_ok=True)
            (out / CONFIG_FILE).write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        self.processes.barrier()

    def state(self) -> dict[str, Any]:
        return {
            "steps_done": self.steps_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "control": self.control.state_dict(),
            "previous_entropies": self.previous_entropies,
            "config": self.config.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.control.load_state_dict(state["control"])
        self.previous_entropies = state["previous_entropies"]
        self.steps_done = state["steps_done"]

    def save(self) -> None:
        if self.processes.main:
            save_checkpoint(self.output, self.state())
        self.processes.barrier()

    def _finish(self, history: list[dict[str, Any]]) -> None:
        self.model.save_pretrained(self.output / "model")
        self.tokenizer.save_pretrained(self.output / "model")
        try:
            from .plots import plot_runs
        except ImportError:
            return
        try:
            plot_runs({"run": history}, self.output / "metrics.png", title=str(self.output))
        except ImportError:
            print("entrodec: matplotlib is not installed; no plot (pip install matplotlib)", file=sys.stderr)

    def _all_ranks(self, record: dict[str, Any]) -> dict[str, Any]:
        keys = [k for k in record if k != "step"]
        averaged = self.processes.mean([float(record[k]) for k in keys])
        return {"step": record["step"], **dict(zip(keys, averaged))}


def resume_config(output: str | Path) -> TrainConfig:
    """The config a run in ``output`` was started with."""
    path = Path(output) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: is {str(output)!r} a training run's folder?")
    return config_from_dict(yaml.safe_load(path.read_text()), str(path))


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0
