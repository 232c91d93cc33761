"""Figures of the sinks of one prompt: phi per token and layer, the sink-dimension evidence, sinks on the image."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..config import FIRST_SEARCHED_LAYER
from .capture import Capture
from .figures import grid_panel, layer_ticks, legend_outside, save_figure, subplots


def sink_grid(capture: Capture, grid, layer: int) -> torch.Tensor:
    """The visual sinks of ``layer`` on one image's patch grid: bool ``(rows, cols)``."""
    rows, cols, positions = grid
    return capture.sinks[layer][positions.cpu()].reshape(rows, cols)


def phi_grid(capture: Capture, grid, layer: int) -> torch.Tensor:
    rows, cols, positions = grid
    return capture.phi[layer][positions.cpu()].reshape(rows, cols)


def phi_strip_figure(capture: Capture, path: str | Path, tokens: list[str] | None = None) -> Path:
    """Heat strip: phi of every token (x) entering every layer (y); sinks (phi > tau) marked with dots."""
    phi = capture.phi.numpy()
    num_layers, length = phi.shape
    fig, (ax,) = subplots(1, 1, panel=(min(16.0, 2.5 + 0.06 * length), 1.2 + 0.3 * num_layers))
    image = ax.imshow(phi, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0)
    sink_layer, sink_token = capture.sinks.nonzero(as_tuple=True)
    ax.scatter(sink_token.numpy(), sink_layer.numpy(), s=6, c="red", marker="o", label=f"sink (phi > {capture.tau:g})")
    visual = capture.visual.nonzero().flatten()
    if len(visual):
        ax.axvspan(int(visual[0]) - 0.5, int(visual[-1]) + 0.5, ymin=1.0, ymax=1.04, color="orange", clip_on=False)
        ax.text(float(visual.float().mean()), -0.9, "image tokens", ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("token position")
    ax.set_ylabel("layer (input)")
    ax.set_yticks(range(num_layers))
    if tokens is not None and length <= 80:
        ax.set_xticks(range(length))
        ax.set_xticklabels(tokens, rotation=90, fontsize=5)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.01), fontsize=7, borderaxespad=0.0)  # above: no data hidden
    ax.axhline(FIRST_SEARCHED_LAYER - 0.5, color="white", lw=0.8, ls="--")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label=f"phi on dims {list(capture.sink_dims)}")
    return save_figure(fig, path)


def sink_dimension_figure(capture: Capture, path: str | Path, extra_dims: int = 2) -> Path:
    """Left: per sink dimension, |x_d|/RMS of the first token vs the median token, per layer (the
    massive-activation plot). Right: every dimension of the first token at the layer where phi peaks."""
    first, median = capture.first_token_ratio.numpy(), capture.median_token_ratio.numpy()  # (L, D)
    num_layers, hidden = first.shape
    peak_layer = int(capture.phi[:, capture.first_token].argmax())
    others = [int(d) for d in np.argsort(-first[peak_layer]) if int(d) not in capture.sink_dims][:extra_dims]
    fig, axes = subplots(1, 2, panel=(5.6, 3.4))
    layers = np.arange(num_layers)
    colors = iter(["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"] * 4)
    for dim in list(capture.sink_dims) + others:
        color = next(colors)
        kind = "sink dim" if dim in capture.sink_dims else "other dim"
        axes[0].plot(layers, first[:, dim], color=color, marker="o", ms=3, label=f"{kind} {dim}: first token")
        axes[0].plot(layers, median[:, dim], color=color, ls="--", label=f"{kind} {dim}: median token")
    axes[0].axhline(math.sqrt(hidden), color="grey", lw=0.7, ls=":")
    axes[0].text(0, math.sqrt(hidden), f"sqrt(D) = {math.sqrt(hidden):.1f}", fontsize=7, va="bottom")
    axes[0].set_xlabel("layer (input)")
    axes[0].set_ylabel("|x_d| / RMS(x)")
    layer_ticks(axes[0], num_layers)
    legend_outside(axes[0], fontsize=6)
    axes[0].set_title("sink-dimension evidence", fontsize=9)
    axes[1].bar(np.arange(hidden), first[peak_layer], width=1.0, color="C7")
    for dim in capture.sink_dims:
        axes[1].bar([dim], [first[peak_layer, dim]], width=max(1.0, hidden / 150), color="red")
    axes[1].set_xlabel("hidden dimension")
    axes[1].set_ylabel("|x_d| / RMS(x)")
    axes[1].set_title(f"first token entering layer {peak_layer} (sink dims in red)", fontsize=9)
    return save_figure(fig, path)


def sink_grid_figure(capture: Capture, grid, image, path: str | Path, title: str = "") -> Path:
    """One panel per searched layer: phi over the image's patch grid, visual sinks boxed in red."""
    layers = list(range(min(FIRST_SEARCHED_LAYER, capture.num_layers - 1), capture.num_layers))
    cols = min(len(layers), 6)
    rows = math.ceil(len(layers) / cols)
    fig, axes = subplots(rows, cols, panel=(2.4, 2.5))
    vmax = float(max(capture.tau * 1.5, max(float(phi_grid(capture, grid, l).max()) for l in layers)))
    artist = None
    for ax, layer in zip(axes, layers):
        outline = sink_grid(capture, grid, layer)
        artist = grid_panel(ax, image, phi_grid(capture, grid, layer), outline, vmax=vmax, cmap="viridis",
                            title=f"layer {layer}: {int(outline.sum())} visual sinks")
    for ax in axes[len(layers):]:
        ax.axis("off")
    if artist is not None:
        fig.colorbar(artist, ax=axes[len(layers) - 1], fraction=0.046, pad=0.02, label="phi")
    fig.suptitle(title or f"visual sinks (phi > {capture.tau:g}) per layer", fontsize=9)
    return save_figure(fig, path)
