"""Figures: the loss curve and a filmstrip (rows = captions, columns = frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(steps: list[int], losses: list[float], path: str | Path, title: str = "training loss") -> Path:
    """Raw loss (faint) and a running mean, log-scale y."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if losses:
        y = np.asarray(losses, dtype=np.float64)
        ax.plot(steps, y, color="tab:blue", alpha=0.3, lw=0.8, label="loss")
        k = max(1, len(y) // 20)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, color="tab:blue", lw=1.8, label=f"mean of {k}")
        if (y > 0).all():
            ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def filmstrip(videos: list[np.ndarray], captions: list[str], path: str | Path, cell: float = 0.9) -> Path:
    """``videos[i]`` is [T, H, W, 3] uint8; one row per caption (labelled), one column per frame."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = len(videos), max(v.shape[0] for v in videos)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell + 2.2, rows * cell + 0.3), dpi=100, squeeze=False)
    for r, (video, caption) in enumerate(zip(videos, captions)):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < video.shape[0]:
                ax.imshow(video[c], interpolation="nearest")
            if r == 0:
                ax.set_title(f"t={c}", fontsize=7)
        axes[r][0].set_ylabel(caption, rotation=0, ha="right", va="center", fontsize=8)
    height = rows * cell + 0.3  # margins in inches, not fractions: 32 rows get no blank band above them
    fig.subplots_adjust(left=2.0 / (cols * cell + 2.2), right=0.99, top=1 - 0.22 / height, bottom=0.05 / height,
                        wspace=0.05, hspace=0.1)
    fig.savefig(path)
    plt.close(fig)
    return path
