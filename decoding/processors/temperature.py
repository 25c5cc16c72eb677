"""Temperature: divide the logits by ``T``."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from ...kernels import program
from ..fused import KernelOp, ReportsTemperature, process_fused
from ..rowparams import RowParam, check_row_param, row_column


def apply_temperature(scores: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``scores / t`` for a ``[batch, 1]`` column of temperatures ``>= 0``, in the scores' dtype.

    ``t = 0`` keeps only the first argmax; a row whose ``z/T`` would overflow is returned as
    ``(z − z_max)/T`` (the same distribution); what is still beyond the dtype's range saturates.
    """
    work = scores if scores.dtype == torch.float64 else scores.float()
    t = t.to(work.dtype)
    safe_t = torch.where(t > 0, t, torch.ones_like(t))
    heated = work / safe_t
    finite = work.isfinite()
    limit = torch.finfo(scores.dtype).max
    # beyond the *output* dtype's range counts too: fp16/bf16 overflow long before float32 does
    overflow = (finite & ~(heated.abs() <= limit)).any(dim=-1, keepdim=True)
    if bool(overflow.any()):
        # A tiny T overflows z/T; z/T − z_max/T is the same distribution and cannot overflow upwards.
        shifted = (work - work.amax(dim=-1, keepdim=True)) / safe_t
        heated = torch.where(overflow, shifted, heated)
    # Saturate what is left beyond the output dtype's range (large negatives).
    heated = torch.where(finite, heated.clamp(-limit, limit), heated)
    greedy = t == 0
    if bool(greedy.any()):
        first_max = torch.zeros_like(work, dtype=torch.bool)
        first_max.scatter_(1, work.argmax(dim=-1, keepdim=True), True)
        heated = torch.where(greedy & ~first_max, torch.full_like(work, -torch.inf), heated)
    return heated.to(scores.dtype)


class Temperature(ReportsTemperature, LogitsProcessor):
    """Divide each row's logits by its temperature; ``temperature=0`` keeps only the first argmax (greedy).

    Keeps every token: it reshapes the distribution (flatter for ``T > 1``, sharper for ``T < 1``) without
    removing anything, so where it sits in a chain decides whether later truncations see the heated
    distribution (transformers' order) or the raw one (llama.cpp's order).

    A row whose heated logits would overflow (a tiny ``T``, or an fp16/bf16 input) is returned as
    ``(z − z_max)/T``, the same distribution, saturated at the dtype's largest finite magnitude instead
    of reaching ``inf`` (which would turn the softmax into NaN).

    Args:
        temperature: ``T >= 0``, a scalar or a ``[batch]`` tensor.

    Example:
        >>> import torch
        >>> from entrodec.decoding import Temperature
        >>> Temperature(2.0)(None, torch.tensor([[2.0, 0.0, -2.0]]))
        tensor([[ 1.,  0., -1.]])
        >>> Temperature(torch.tensor([1.0, 0.0]))(None, torch.tensor([[1.0, 3.0], [1.0, 3.0]]))
        tensor([[1., 3.],
                [-inf, 3.]])
    """

    def __init__(self, temperature: RowParam = 1.0) -> None:
        self.temperature = check_row_param("temperature", temperature, 0.0)

    def kernel_op(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> KernelOp:
        return KernelOp(program.TEMPERATURE, {"temperature": self.temperature})

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        fused = process_fused([self], input_ids, scores)
        if fused is not None:
            return fused
        t = row_column(self.temperature, scores, "temperature", torch.float64)
        self.last_temperature = t.view(-1).float()  # stays on the device: reading it is the caller's sync
        return apply_temperature(scores, t)

    def __repr__(self) -> str:
        return f"Temperature(temperature={self.temperature!r})"
