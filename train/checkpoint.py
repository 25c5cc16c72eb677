"""Checkpoints that let a killed run resume at the step after the last one saved, and the run's
metrics log (one JSON object per step) cut back to match."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous checkpoint intact."""
    target = folder / CHECKPOINT
    partial = folder / (CHECKPOINT + ".partial")
    torch.save(state, partial)
    os.replace(partial, target)


def load_checkpoint(folder: Path) -> dict[str, Any]:
    path = folder / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {str(path)!r} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)


def append_metrics(folder: Path, record: dict[str, Any]) -> None:
    with open(folder / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(folder: Path, steps_done: int) -> None:
    """Keep the records of steps before ``steps_done`` (those after the checkpoint will be redone)."""
    kept = [r for r in read_metrics(folder) if r["step"] < steps_done]
    partial = folder / (METRICS + ".partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(partial, folder / METRICS)
