"""Figures: the image with sink patches outlined, and attention heatmaps before and after VAR."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def averaged_over(layers=None, heads=None, query: int = -1) -> str:
    """What an attention map averages, in words: ``layers`` / ``heads`` as given to
    :func:`vasink.analysis.text_to_image_attention` (None: its defaults, layers 2 to last, all heads)."""
    def span(values):
        values = sorted(values)
        if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
            return f"{values[0]}-{values[-1]}"
        return ", ".join(str(v) for v in values)

    layer_text = "layers 2 to last" if layers is None else \
        (f"layer {layers[0]}" if len(layers) == 1 else f"layers {span(layers)}")
    head_text = "all heads" if heads is None else (f"head {heads[0]}" if len(heads) == 1 else f"heads {span(heads)}")
    token = "the last token" if query == -1 else f"token {query}"
    return f"attention of {token} to each patch, mean over {layer_text} and {head_text}"


def attention_comparison_figure(image, sink_grid: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                                title: str, path: str | Path, *, layers=None, heads=None, query: int = -1,
                                after_label: str = "VAR on", before_label: str = "VAR off") -> Path:
    """Three panels: the image with sink patches outlined; attention before VAR; after VAR (one colour scale,
    one colour bar). ``layers``, ``heads``, ``query``: what the maps average, as passed to
    :func:`vasink.analysis.text_to_image_attention` (None: its defaults); said under the title.
    ``after_label``: what the right panel shows (the demo's "VAR, all layers" variant is not the paper's VAR;
    "PAI on" for ``text_to_image_attention(..., method="pai")``), ``before_label`` the middle one."""
    rows, cols = sink_grid.shape
    width, height = image.size
    cell_w, cell_h = width / cols, height / rows
    vmax = float(max(before.max(), after.max()))
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 4.1))
    axes[0].imshow(image)
    for r, c in sink_grid.nonzero().tolist():
        axes[0].add_patch(Rectangle((c * cell_w, r * cell_h), cell_w, cell_h, fill=False, edgecolor="red", lw=1.5))
    axes[0].set_title(f"visual sinks ({int(sink_grid.sum())} patches)")
    artist = None
    for ax, grid, name in ((axes[1], before, f"attention, {before_label}"),
                           (axes[2], after, f"attention, {after_label}")):
        ax.imshow(image, alpha=0.35)
        artist = ax.imshow(np.asarray(grid), cmap="magma", alpha=0.75, vmin=0, vmax=vmax,
                           extent=(0, width, height, 0), interpolation="nearest")
        ax.set_title(f"{name} (image total {float(grid.sum()):.3f})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(artist, ax=axes[2], fraction=0.046, pad=0.03, label="attention weight (both maps)")
    fig.suptitle(f"{title}\n{averaged_over(layers, heads, query)}", fontsize=10)
    return save_figure(fig, path)


# -- shared helpers of the analysis figures -----------------------------------------------------------------


WHITESPACE_SHOWN = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "\u2423"}  # a newline as \n, a space as an open box
MAX_LAYER_TICKS = 12
ROWS_PER_FIGURE = 6  # attention figures: at most this many rows of panels per PNG (about 1.5k px tall)


def readable_tokens(tokenizer, ids) -> list[str]:
    """Each token as the text it stands for, for labels: byte-level BPE's markers (``Ċ`` a newline, ``Ġ`` a
    space: SmolLM2, Llama 3, Qwen) and SentencePiece's (``\u2581``, ``<0x0A>``) decoded by the tokenizer itself,
    whitespace made visible (``\\n``, ``\\t``, ``\u2423``). SentencePiece decoders drop a word's leading
    space when the token is decoded alone; it is put back from the token's ``\u2581``."""
    tokens = []
    for token_id in [int(i) for i in ids]:
        raw = tokenizer.convert_ids_to_tokens(token_id)
        try:
            text = tokenizer.decode([token_id])
        except Exception:  # noqa: BLE001 - a tokenizer that cannot decode one id: show its raw token
            text = raw
        if isinstance(raw, str) and raw.startswith("\u2581") and not text.startswith((" ", "\u2581")):
            text = " " + text  # "\u2581the" decoded alone is "the": the word's space was dropped
        tokens.append("".join(WHITESPACE_SHOWN.get(ch, ch) for ch in text))
    return tokens


def layer_ticks(ax, num_layers: int, axis: str = "x") -> None:
    """Layer numbers on ``axis``, every k-th so that at most MAX_LAYER_TICKS labels share the axis."""
    step = max(1, math.ceil(num_layers / MAX_LAYER_TICKS))
    ticks = list(range(0, num_layers, step))
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks)


def legend_outside(ax, **kwargs):
    """The legend right of the axes, where it hides no data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def attention_figures(image, panels, title: str, path: str | Path) -> list[Path]:
    """``panels``: list of (row title, sinks (rows, cols), before map, after) where ``after`` is VAR's map or a
    list of (method label, map), one per method (``[("VAR", var_map), ("PAI", pai_map)]``). One row of panels
    each (sinks, methods off, each method on; one colour scale per row), at most ROWS_PER_FIGURE rows per PNG:
    ``path`` when they fit in one, else ``<stem>_part<k>.png``."""
    path = Path(path)
    panels = [(name, sinks, before, [("VAR", after)] if torch.is_tensor(after) else list(after))
              for name, sinks, before, after in panels]
    columns = 2 + max(len(after) for *_, after in panels)
    chunks = [panels[i:i + ROWS_PER_FIGURE] for i in range(0, len(panels), ROWS_PER_FIGURE)]
    written = []
    for number, chunk in enumerate(chunks, start=1):
        fig, axes = subplots(len(chunk), columns, panel=(2.8, 2.7))
        for index, (name, sinks, before, after) in enumerate(chunk):
            row_axes = axes[columns * index:columns * (index + 1)]
            vmax = float(max([before.max()] + [grid.max() for _, grid in after]))
            off = "VAR off" if [label for label, _ in after] == ["VAR"] else "methods off"
            grid_panel(row_axes[0], image, outline=sinks, title=f"{name}: {int(sinks.sum())} visual sinks")
            artist = grid_panel(row_axes[1], image, before, vmax=vmax,
                                title=f"{off} (visual mass {float(before.sum()):.3f})")
            for ax, (label, grid) in zip(row_axes[2:], after):
                artist = grid_panel(ax, image, grid, vmax=vmax,
                                    title=f"{label} on (visual mass {float(grid.sum()):.3f})")
            for ax in row_axes[2 + len(after):]:
                ax.set_axis_off()
            fig.colorbar(artist, ax=row_axes[1 + len(after)], fraction=0.046, pad=0.02, label="attention weight")
        part = f" (part {number} of {len(chunks)})" if len(chunks) > 1 else ""
        fig.suptitle(title + part, fontsize=9)
        target = path if len(chunks) == 1 else path.with_name(f"{path.stem}_part{number}{path.suffix}")
        written.append(save_figure(fig, target))
    return written


def subplots(rows: int, cols: int, panel=(3.2, 3.0)):
    """A figure of ``rows x cols`` panels of ``panel`` inches; axes always a flat list."""
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False)
    return fig, list(axes.flat)


def save_figure(fig, path: str | Path, dpi: int = 90) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    top = 1.0
    if fig._suptitle is not None:  # tight_layout ignores the suptitle: keep the panels (and their titles) below it
        lines = fig._suptitle.get_text().count("\n") + 1
        top = 1.0 - (lines * fig._suptitle.get_fontsize() * 1.5 + 6) / 72 / fig.get_figheight()
    with warnings.catch_warnings():  # colorbars shared by several axes make tight_layout complain, harmlessly
        warnings.simplefilter("ignore")
        fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def processed_image(processor, inputs, fallback=None, index: int = 0):
    """The image as the model saw it (``pixel_values`` un-normalized), so patch cells line up with tokens."""
    from PIL import Image

    pixels = inputs.get("pixel_values") if hasattr(inputs, "get") else None
    image_processor = getattr(processor, "image_processor", None)
    if pixels is None or pixels.dim() != 4 or image_processor is None:
        return fallback
    mean = torch.tensor(getattr(image_processor, "image_mean", [0.0, 0.0, 0.0]))[:, None, None]
    std = torch.tensor(getattr(image_processor, "image_std", [1.0, 1.0, 1.0]))[:, None, None]
    array = (pixels[index].float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((array * 255).round().astype(np.uint8))


def grid_panel(ax, image, values=None, outline=None, *, vmin=0.0, vmax=None, cmap="magma", title=""):
    """The image, optionally under a (rows, cols) heatmap, with the ``outline`` cells boxed in red."""
    width, height = image.size
    ax.imshow(image, alpha=0.35 if values is not None else 1.0)
    artist = None
    if values is not None:
        artist = ax.imshow(np.asarray(values, dtype=float), cmap=cmap, alpha=0.75, vmin=vmin, vmax=vmax,
                           extent=(0, width, height, 0), interpolation="nearest")
    if outline is not None:
        rows, cols = outline.shape
        cell_w, cell_h = width / cols, height / rows
        for r, c in torch.as_tensor(outline).nonzero().tolist():
            ax.add_patch(Rectangle((c * cell_w, r * cell_h), cell_w, cell_h, fill=False, edgecolor="red", lw=1.2))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return artist
