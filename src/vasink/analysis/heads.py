"""Which heads look at the image: a layer x head map of the visual non-sink ratio r and of the head test.

Per (layer, head) over the eligible query rows of many prompts (docs/method.md#the-image-centric-head-test):

- ``visual_mass``: mean m_V, the attention a text query gives to the image;
- ``nonsink_ratio``: mean r = (m_V - m_SV) / m_V over the rows with m_V > 0;
- ``selected[preset]``: share of rows that pass the head test m_V >= min_visual_attention and r >= rho,
  with each preset's rho (paper semantics).

The sinks of a layer are the tokens with phi > tau entering it; layers 0 and 1 are never searched, so
there r = 1 wherever m_V > 0. VAR itself only acts in ``config.modified_layers`` and, by default, only
when the prompt has a visual sink in that layer; the map shows the bare head test everywhere.

:class:`MassChange`: what an attention-side method (VAR, PAI, VAF; ``vasink.analysis.methods``) does to m_V per
(layer, head), over the same rows: its own edit (its weights minus the stock attention of the same queries and
keys, zero in the layers it leaves alone) and the total change against the model as loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import PRESETS, VARConfig
from ..redistribute import select_rows
from .capture import Capture


@dataclass
class HeadMap:
    """Sums over prompts; read the means with :meth:`result`."""

    num_layers: int
    num_heads: int
    min_visual_attention: float
    presets: dict[str, float] = field(default_factory=lambda: {name: p["rho"] for name, p in PRESETS.items()})

    def __post_init__(self):
        shape = (self.num_layers, self.num_heads)
        self.rows = 0  # eligible rows seen (per layer and head: the same count)
        self.visual_mass_sum = np.zeros(shape)
        self.ratio_sum = np.zeros(shape)
        self.ratio_rows = np.zeros(shape)
        self.selected_rows = {name: np.zeros(shape) for name in self.presets}
        self.prompts = 0
        self.prompts_with_visual_sink = np.zeros(self.num_layers)

    def add(self, capture: Capture) -> None:
        stats = head_statistics(capture, self.min_visual_attention, self.presets)
        self.rows += stats["rows"]
        self.visual_mass_sum += stats["visual_mass_sum"]
        self.ratio_sum += stats["ratio_sum"]
        self.ratio_rows += stats["ratio_rows"]
        for name in self.presets:
            self.selected_rows[name] += stats["selected_rows"][name]
        self.prompts += 1
        self.prompts_with_visual_sink += (capture.sinks & capture.visual).any(-1).numpy()

    def result(self) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "prompts": self.prompts,
                "rows": self.rows,
                "visual_mass": self.visual_mass_sum / max(self.rows, 1),
                "nonsink_ratio": np.where(self.ratio_rows > 0, self.ratio_sum / self.ratio_rows, np.nan),
                "selected": {name: rows / max(self.rows, 1) for name, rows in self.selected_rows.items()},
                "rho": dict(self.presets),
                "min_visual_attention": self.min_visual_attention,
                "prompts_with_visual_sink": self.prompts_with_visual_sink / max(self.prompts, 1),
            }


def head_statistics(capture: Capture, min_visual_attention: float, presets: dict[str, float]) -> dict:
    """Sums over one prompt's eligible rows, per (layer, head): see :class:`HeadMap`."""
    rows = capture.eligible_rows()
    weights = capture.weights[:, :, rows]  # (L, H, E, K)
    visual = capture.visual[None, None, None, :]
    visual_sink = (capture.sinks & capture.visual)[:, None, None, :]  # (L, 1, 1, K)
    visual_mass = (weights * visual).sum(-1)  # (L, H, E)
    visual_sink_mass = (weights * visual_sink).sum(-1)
    has_visual = visual_mass > 0
    ratio = torch.where(has_visual, (visual_mass - visual_sink_mass) / visual_mass.clamp_min(1e-30), 0.0)
    selected = {}
    for name, rho in presets.items():
        chosen = select_rows(visual_mass, visual_sink_mass, capture.visual.sum().float(), rho=rho,
                             min_visual_attention=min_visual_attention, compat="paper")
        selected[name] = chosen.sum(-1).double().numpy()
    return {
        "rows": len(rows),
        "visual_mass_sum": visual_mass.sum(-1).double().numpy(),
        "ratio_sum": ratio.sum(-1).double().numpy(),
        "ratio_rows": has_visual.sum(-1).double().numpy(),
        "selected_rows": selected,
    }


def visual_mass(weights: torch.Tensor, rows: torch.Tensor, visual: torch.Tensor) -> np.ndarray:
    """m_V of the rows ``rows`` of ``weights`` (L, H, R, K): ``(L, H, E)`` float64."""
    return (weights[:, :, rows].double() * visual.double()).sum(-1).numpy()


@dataclass
class MassChange:
    """One method's change of m_V per (layer, head), summed over prompts' eligible rows; means in :meth:`result`."""

    num_layers: int
    num_heads: int

    def __post_init__(self):
        self.rows = 0
        self.prompts = 0
        self.own_sum = np.zeros((self.num_layers, self.num_heads))
        self.total_sum = np.zeros((self.num_layers, self.num_heads))

    def add(self, base: Capture, run: Capture) -> None:
        """``base``: the prompt's capture as loaded; ``run``: the same prompt with the method on, its stock twin
        kept (``capture_forward(..., method=m, stock_twin=True)``)."""
        if run.stock_weights is None:
            raise ValueError("MassChange needs the method's capture with stock_twin=True")
        rows = base.eligible_rows()
        method_mass = visual_mass(run.weights, rows, base.visual)  # (L, H, E)
        self.own_sum += (method_mass - visual_mass(run.stock_weights, rows, base.visual)).sum(-1)
        self.total_sum += (method_mass - visual_mass(base.weights, rows, base.visual)).sum(-1)
        self.rows += len(rows)
        self.prompts += 1

    def result(self) -> dict:
        return {"prompts": self.prompts, "rows": self.rows, "own": self.own_sum / max(self.rows, 1),
                "total": self.total_sum / max(self.rows, 1)}


def head_map(captures, config: VARConfig) -> dict:
    """The map over an iterable of :class:`Capture` (each from one prompt)."""
    accumulator = None
    for capture in captures:
        if accumulator is None:
            accumulator = HeadMap(capture.num_layers, capture.num_heads, config.min_visual_attention)
        accumulator.add(capture)
    if accumulator is None:
        raise ValueError("head_map needs at least one prompt")
    return accumulator.result()


def heads_figure(result: dict, modified_layers, path, skips_layers_without_visual_sink: bool = True) -> Path:
    """Heatmaps (layer x head): mean m_V, mean r, and the share of rows each preset's head test selects.

    Layers where VAR changes nothing are hatched: those it never modifies (``*``), and, when VAR skips a layer
    without a visual sink (``skip_layers_without_visual_sink``, the paper's rule), the modified layers where
    no prompt had one (``\u2020``): the head test still "selects" rows there, but VAR leaves them as they are."""
    from .figures import save_figure, subplots

    panels = [("mean visual mass m_V", result["visual_mass"], "viridis", (0, None)),
              ("mean visual non-sink ratio r", result["nonsink_ratio"], "viridis", (0, 1))]
    for name, share in result["selected"].items():
        panels.append((f"selected, {name} (rho {result['rho'][name]:g})", share, "magma", (0, 1)))
    num_layers, num_heads = result["visual_mass"].shape
    with_sink = result.get("prompts_with_visual_sink")
    no_sink = {layer for layer in modified_layers if skips_layers_without_visual_sink and with_sink is not None
               and with_sink[layer] == 0}
    fig, axes = subplots(1, len(panels), panel=(max(2.2, 0.35 * num_heads + 1.2), max(2.4, 0.22 * num_layers + 1)))
    for ax, (title, values, cmap, (low, high)) in zip(axes, panels):
        image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(num_heads) if num_heads <= 16 else range(0, num_heads, 4))
        for layer in range(num_layers):  # hatched, not paled: a pale cell would read as a high value
            if layer not in modified_layers:
                ax.axhspan(layer - 0.5, layer + 0.5, facecolor="none", edgecolor="0.6", hatch="////", lw=0)
            elif layer in no_sink:
                ax.axhspan(layer - 0.5, layer + 0.5, facecolor="none", edgecolor="0.6", hatch="\\\\", lw=0)
        ax.set_yticks(range(num_layers), [f"{layer}*" if layer not in modified_layers else
                                          f"{layer}\u2020" if layer in no_sink else str(layer)
                                          for layer in range(num_layers)])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    note = ("\nhatched \\\\ (layer marked \u2020): no prompt had a visual sink there, so VAR changed nothing "
            "(rows shown as selected were left alone)") if no_sink else ""
    fig.suptitle(f"heads over {result['prompts']} prompts ({result['rows']} text query rows); "
                 f"hatched // (layer marked *): layers VAR never modifies{note}", fontsize=9)
    return save_figure(fig, path)


def mass_change_figure(changes: dict, modified_layers: dict, path) -> Path:
    """One heatmap (layer x head) per method: its own change of the mean m_V (``MassChange.result()["own"]``),
    one diverging colour scale for all, centred on 0. ``modified_layers``: label -> the layers the method edits;
    the others are hatched (``*``)."""
    from .figures import save_figure, subplots

    labels = list(changes)
    num_layers, num_heads = changes[labels[0]]["own"].shape
    limit = max(float(np.abs(changes[label]["own"]).max()) for label in labels) or 1e-6
    fig, axes = subplots(1, len(labels), panel=(max(2.4, 0.35 * num_heads + 1.4), max(2.4, 0.22 * num_layers + 1)))
    for ax, label in zip(axes, labels):
        modified = set(modified_layers[label])
        image = ax.imshow(changes[label]["own"], aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
                          interpolation="nearest")
        ax.set_title(f"{label}: change of mean m_V", fontsize=8)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(num_heads) if num_heads <= 16 else range(0, num_heads, 4))
        for layer in range(num_layers):
            if layer not in modified:
                ax.axhspan(layer - 0.5, layer + 0.5, facecolor="none", edgecolor="0.6", hatch="////", lw=0)
        ax.set_yticks(range(num_layers), [str(layer) if layer in modified else f"{layer}*"
                                          for layer in range(num_layers)])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    first = changes[labels[0]]
    fig.suptitle(f"each method's own edit of the visual mass m_V (its weights minus stock attention of the same "
                 f"queries and keys), mean over {first['prompts']} prompts ({first['rows']} text rows after the "
                 "image)\nhatched // (layer marked *): layers the method never modifies; PAI edits only the last "
                 "row of each prompt", fontsize=9)
    return save_figure(fig, path)
