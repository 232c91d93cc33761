"""Figures: the image with sink patches outlined, and attention heatmaps before and after VAR."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def attention_comparison_figure(image, sink_grid: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                                title: str, path: str | Path) -> Path:
    """Three panels: the image with sink patches outlined; attention before VAR; after VAR (same colour scale)."""
    rows, cols = sink_grid.shape
    width, height = image.size
    cell_w, cell_h = width / cols, height / rows
    vmax = float(max(before.max(), after.max()))
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
    axes[0].imshow(image)
    for r, c in sink_grid.nonzero().tolist():
        axes[0].add_patch(Rectangle((c * cell_w, r * cell_h), cell_w, cell_h, fill=False, edgecolor="red", lw=1.5))
    axes[0].set_title(f"visual sinks ({int(sink_grid.sum())} patches)")
    for ax, grid, name in ((axes[1], before, "attention, VAR off"), (axes[2], after, "attention, VAR on")):
        ax.imshow(image, alpha=0.35)
        ax.imshow(np.asarray(grid), cmap="magma", alpha=0.75, vmin=0, vmax=vmax,
                  extent=(0, width, height, 0), interpolation="nearest")
        ax.set_title(name)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
