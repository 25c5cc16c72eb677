"""Entropy and reward against step, from a run's metrics (matplotlib, saved to a file)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot_runs(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str = "") -> Path:
    """One line per run in each panel: mean token entropy, reward and kept-set size per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("entropy_mean", "mean token entropy (nats)"), ("reward_mean", "mean reward"), ("kept_mean", "rollout kept-set size")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for ax, (key, label) in zip(axes, panels):
        for name, records in runs.items():
            ax.plot([r["step"] for r in records], [r[key] for r in records], label=name, lw=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
