"""Entropy-adaptive temperature: three published rules that set each token's temperature from the
entropy of the distribution being sampled."""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor

from ...kernels import program
from ..entropy import entropy_from_log_probs, log_probs
from ..fused import KernelOp, Measured, ReportsTemperature, process_fused
from ..rowparams import RowParam, check_row_param, row_column
from .temperature import apply_temperature

KINDS = ("dynatemp", "edt", "hapo")
_EPS = 1e-6


def dynatemp_temperature(
    h: torch.Tensor, n: torch.Tensor, t0: torch.Tensor, spread: torch.Tensor, exponent: torch.Tensor
) -> torch.Tensor:
    """llama.cpp's dynamic temperature from the entropy ``h`` of ``n`` candidates (``[batch, 1]`` each):
    ``T = max(0, T0−Δ) + (T0+Δ − max(0, T0−Δ)) · (H/ln n)^e``; rows with ``n <= 1`` keep ``T0``."""
    normalised = (h / n.clamp(min=2).log()).clamp(0, 1)
    low = (t0 - spread).clamp(min=0)
    high = t0 + spread
    return torch.where(n > 1, low + (high - low) * normalised.pow(exponent), t0)


def edt_temperature(h: torch.Tensor, t0: torch.Tensor, theta: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """EDT (Zhang et al., arXiv 2403.14541) from the entropy ``h``: ``T = T0 · base^(θ/H)``; ``H = 0``
    gives ``T = 0`` (greedy)."""
    exponent = torch.where(h > 0, theta / h.clamp(min=1e-300), torch.full_like(h, math.inf))
    return t0 * base.pow(exponent)


class HapoStatistics:
    """Normalisation of ``ln H`` for HAPO: a pivot (quantile of recent log-entropies), their RMS about
    the pivot, and the scales that map positive / negative z-scores into [0, 1] / [−1, 0]."""

    def __init__(self, pivot: float, spread: float, scale_pos: float, scale_neg: float) -> None:
        self.pivot, self.spread, self.scale_pos, self.scale_neg = pivot, spread, scale_pos, scale_neg

    @classmethod
    def from_entropies(cls, entropies: torch.Tensor, quantile: float) -> "HapoStatistics | None":
        """Statistics of a window of token entropies (nats); ``None`` for fewer than two entries."""
        x = entropies.double().clamp(min=_EPS).log()
        if x.numel() < 2:
            return None
        pivot = float(torch.quantile(x, quantile))
        spread = float(((x - pivot) ** 2).mean().sqrt())
        z = (x - pivot) / (spread + _EPS)
        positive, negative = z[z > 0], z[z < 0]
        scale_pos = 1.0 / float(positive.max()) if positive.numel() else 0.0
        scale_neg = 1.0 / float(negative.min().abs()) if negative.numel() else 0.0
        return cls(pivot, spread, scale_pos, scale_neg)

    def h_hat(self, entropy: float) -> float:
        """The signed, bounded score of one token's entropy: > 0 above the pivot, < 0 below it."""
        z = (math.log(max(entropy, _EPS)) - self.pivot) / (self.spread + _EPS)
        # The released code multiplies negative z by a negative scale, so every token is heated; the
        # paper's intent (cool confident tokens) needs the positive magnitude 1/|min z| here.
        scaled = z * self.scale_pos if z > 0 else z * self.scale_neg
        return max(-1.0, min(1.0, scaled))


class EntropyTemperature(ReportsTemperature, LogitsProcessor):
    """Divide each row's logits by a temperature set from the entropy of that row's distribution.

    Keeps every token (like :class:`Temperature`, and ``T = 0`` rows become greedy); one of three
    published rules, each with per-row parameters:

    - ``kind="dynatemp"`` (llama.cpp): ``T = max(0, T0−Δ) + (T0+Δ − max(0, T0−Δ)) · (H/ln n)^e`` over
      the ``n`` finite candidates; unchanged (``T0``) when ``n <= 1``.
    - ``kind="edt"`` (Zhang et al., "EDT", arXiv 2403.14541): ``T = T0 · base^(θ/H)``, base 0.8;
      T rises towards ``T0`` with entropy and falls to 0 (greedy) as ``H → 0``.
    - ``kind="hapo"`` (HAPO, arXiv 2509.16591): ``T = T0 · (1 + τ·ĥ)`` where ĥ scores ``ln H`` against a
      pivot quantile of the row's recent token entropies (RMS-scaled, positive values divided by the
      largest positive and negative ones by the magnitude of the most negative, clamped to [−1, 1]).
      Unlike the authors' released code, which divides negative scores by a negative number and so
      heats every token, this implements the paper's stated intent: tokens less uncertain than the
      pivot are cooled, more uncertain ones heated. Statistics come from a rolling window of the
      last ``window`` token entropies of each row (reset when a new generation starts), or from
      outside via :meth:`set_statistics` (training: the previous rollout batch).

    The temperature used for each row at the last call is in ``last_temperature``.

    Args:
        kind: ``"dynatemp"``, ``"edt"`` or ``"hapo"``.
        temperature: ``T0 >= 0``.
        dynatemp_range: Δ >= 0 (dynatemp). dynatemp_exponent: e > 0 (dynatemp).
        theta: θ > 0 (edt). base: in (0, 1) (edt).
        tau: τ in [0, 1) (hapo). pivot: quantile in [0, 1] (hapo). window: >= 2 tokens (hapo).

    Example:
        >>> import torch
        >>> from entrodec.decoding import EntropyTemperature
        >>> flat = torch.zeros(1, 4)
        >>> dyn = EntropyTemperature(kind="dynatemp", temperature=1.0, dynatemp_range=0.5)
        >>> _ = dyn(None, flat); dyn.last_temperature    # H/ln n = 1: T = T0 + Δ
        tensor([1.5000])
        >>> edt = EntropyTemperature(kind="edt", temperature=1.0, theta=0.1)
        >>> _ = edt(None, flat); round(float(edt.last_temperature), 4)   # 0.8^(0.1/ln 4)
        0.984
    """

    def __init__(
        self,
        kind: str = "dynatemp",
        temperature: RowParam = 1.0,
        dynatemp_range: RowParam = 0.0,
        dynatemp_exponent: RowParam = 1.0,
        theta: RowParam = 0.1,
        base: RowParam = 0.8,
        tau: float = 0.05,
        pivot: float = 0.8,
        window: int = 64,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
        self.kind = kind
        self.temperature = check_row_param("temperature", temperature, 0.0)
        self.dynatemp_range = check_row_param("dynatemp_range", dynatemp_range, 0.0)
        self.dynatemp_exponent = check_row_param("dynatemp_exponent", dynatemp_exponent, 0.0, lo_open=True)
        self.theta = check_row_param("theta", theta, 0.0, lo_open=True)
        self.base = check_row_param("base", base, 0.0, 1.0, lo_open=True, hi_open=True)
        self.tau = check_row_param("tau", tau, 0.0, 1.0, hi_open=True)
        self.pivot = check_row_param("pivot", pivot, 0.0, 1.0)
        self.window = int(check_row_param("window", window, 2, integer=True))
        self._statistics: HapoStatistics | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the rolling entropy windows (a new generation starts)."""
        self._history: list[list[float]] = []
        self._last_length: int | None = None

    def select_rows(self, keep: list[int]) -> None:
        """Keep only the windows of the rows at positions ``keep`` (finished rows left the batch)."""
        if len(self._history) > max(keep, default=-1):
            self._history = [self._history[k] for k in keep]

    def set_statistics(self, entropies: torch.Tensor | None) -> None:
        """Fix HAPO's statistics from outside (e.g. every token entropy of the previous rollout batch);
        ``None`` returns to the per-row rolling windows."""
        self._statistics = None if entropies is None else HapoStatistics.from_entropies(entropies.flatten(), self.pivot)

    @property
    def stateless(self) -> bool:
        """Whether the temperature is a function of the current logits alone (not of rolling windows):
        always for dynatemp and edt, for hapo once :meth:`set_statistics` fixed its statistics."""
        return self.kind != "hapo" or self._statistics is not None

    def _is_new_generation(self, input_ids: torch.LongTensor | None, batch: int) -> bool:
        # A different batch, or a sequence that did not grow by one token, starts empty windows;
        # without input_ids, consecutive calls on the same batch size continue.
        length = None if input_ids is None else input_ids.shape[-1]
        return len(self._history) != batch or (
            length is not None and (self._last_length is None or length != self._last_length + 1)
        )

    def _row_statistics(self, input_ids: torch.LongTensor | None, batch: int) -> list[HapoStatistics | None]:
        """Each row's statistics for this step (nothing is recorded yet)."""
        if self._statistics is not None:
            return [self._statistics] * batch
        if self._is_new_generation(input_ids, batch):
            return [None] * batch
        return [HapoStatistics.from_entropies(torch.tensor(window), self.pivot) for window in self._history]

    def _record(self, input_ids: torch.LongTensor | None, entropies: list[float]) -> None:
        """Append this step's entropies to the rows' windows."""
        if self._is_new_generation(input_ids, len(entropies)):
            self._history = [[] for _ in entropies]
        self._last_length = None if input_ids is None else input_ids.shape[-1]
        self._history = [(window + [h])[-self.window:] for window, h in zip(self._history, entropies)]

    def _hapo_temperature(self, input_ids: torch.LongTensor | None, h: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        entropies = h.view(-1).tolist()
        stats = self._row_statistics(input_ids, len(entropies))
        h_hat = [0.0 if st is None else st.h_hat(entropy) for st, entropy in zip(stats, entropies)]
        self._record(input_ids, entropies)
        h_hat_column = torch.tensor(h_hat, dtype=torch.float64, device=h.device).view(-1, 1)
        return t0 * (1 + self.tau * h_hat_column)

    def kernel_op(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> KernelOp:
        if self.kind == "dynatemp":
            return KernelOp(program.DYNATEMP, {
                "temperature": self.temperature, "dynatemp_range": self.dynatemp_range,
                "dynatemp_exponent": self.dynatemp_exponent,
            })
        if self.kind == "edt":
            return KernelOp(program.EDT, {"temperature": self.temperature, "theta": self.theta, "base": self.base})
        stats = self._row_statistics(input_ids, scores.shape[0])
        columns = torch.tensor(
            [[0.0] * 5 if st is None else [1.0, st.pivot, st.spread, st.scale_pos, st.scale_neg] for st in stats],
            dtype=torch.float64,
        ).unbind(dim=1)
        names = ("has_statistics", "pivot_log_entropy", "spread", "scale_pos", "scale_neg")
        return KernelOp(program.HAPO, {"temperature": self.temperature, "tau": self.tau, **dict(zip(names, columns))})

    def after_kernel(self, input_ids: torch.LongTensor | None, measured: Measured) -> None:
        super().after_kernel(input_ids, measured)
        if self.kind == "hapo":
            self._record(input_ids, measured.entropy.tolist())

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        fused = process_fused([self], input_ids, scores)
        if fused is not None:
            return fused
        t0 = row_column(self.temperature, scores, "temperature", torch.float64)
        h = entropy_from_log_probs(log_probs(scores.double())).unsqueeze(-1)
        if self.kind == "dynatemp":
            n = scores.isfinite().sum(dim=-1, keepdim=True).double()
            spread = row_column(self.dynatemp_range, scores, "dynatemp_range", torch.float64)
            exponent = row_column(self.dynatemp_exponent, scores, "dynatemp_exponent", torch.float64)
            t = dynatemp_temperature(h, n, t0, spread, exponent)
        elif self.kind == "edt":
            theta = row_column(self.theta, scores, "theta", torch.float64)
            base = row_column(self.base, scores, "base", torch.float64)
            t = edt_temperature(h, t0, theta, base)
        else:
            t = self._hapo_temperature(input_ids, h, t0)
        self.last_temperature = t.view(-1).float()
        return apply_temperature(scores, t)

    def __repr__(self) -> str:
        return f"EntropyTemperature(kind={self.kind!r}, temperature={self.temperature!r})"
