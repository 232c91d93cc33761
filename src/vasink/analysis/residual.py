"""How much each token class writes into the residual stream through attention: ||a_ij W_OV x_j||.

For an eligible query i and a key j <= i of layer l, token j's contribution to the attention output of i is
c_ij = sum_h a^h_ij W_O^h W_V^h x_j (x_j: the normalized hidden state the layer projects). Its norm is
sqrt(a_ij^T G_j a_ij) with G_j the Gram matrix of the per-head outputs W_O^h W_V^h x_j, which the capture
builds from ``v_proj``'s output and ``o_proj``'s weight in the same (one) forward.

Per layer and token class (BOS = the first token; visual sink / visual non-sink = image tokens with phi
above / below tau entering the layer; text = every other token), means over (query, key) pairs of the
head-averaged attention and of ||c_ij||, and over tokens of the head-averaged value norm ||W_O^h W_V^h x_j||.
A sink that draws attention but writes little has a small contribution per unit of attention.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .capture import Capture

TOKEN_CLASSES = ("BOS", "visual sink", "visual non-sink", "text")
QUANTITIES = ("attention", "value_norm", "contribution")


def token_classes(capture: Capture, layer: int) -> dict[str, torch.Tensor]:
    """Bool ``(T,)`` per class; the classes partition the prompt's tokens."""
    bos = torch.zeros_like(capture.visual)
    bos[capture.first_token] = True
    sinks = capture.sinks[layer]
    return {
        "BOS": bos,
        "visual sink": capture.visual & sinks,
        "visual non-sink": capture.visual & ~sinks,
        "text": ~capture.visual & ~bos,
    }


def contribution_norms(capture: Capture, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, K) ||c_ij|| and head-mean a_ij for the eligible rows of ``layer`` (0 where j > i)."""
    if capture.value_gram is None:
        raise ValueError("this capture has no value Gram matrices: capture_forward(..., values=True)")
    rows = capture.eligible_rows()
    weights = capture.weights[layer][:, rows]  # (H, E, K)
    gram = capture.value_gram[layer]  # (K, H, H)
    squared = torch.einsum("hek,khg,gek->ek", weights, gram, weights)
    return squared.clamp_min(0).sqrt(), weights.mean(0)


class ResidualTable:
    """Sums over prompts of the per-class quantities, per layer; :meth:`result` gives the means."""

    def __init__(self, num_layers: int):
        shape = (num_layers, len(TOKEN_CLASSES))
        self.sums = {name: np.zeros(shape) for name in QUANTITIES}
        self.pairs = np.zeros(shape)  # (query, key) pairs: denominators of attention and contribution
        self.tokens = np.zeros(shape)  # tokens: denominator of value_norm
        self.num_layers = num_layers

    def add(self, capture: Capture) -> None:
        rows = capture.eligible_rows()
        query_positions = capture.query_positions[rows]  # (E,)
        keys = torch.arange(len(capture.input_ids))
        causal = keys[None, :] <= query_positions[:, None]  # (E, K)
        for layer in range(self.num_layers):
            contribution, attention = contribution_norms(capture, layer)
            value_norm = torch.diagonal(capture.value_gram[layer], dim1=1, dim2=2).clamp_min(0).sqrt().mean(-1)  # (K,)
            for c, (name, members) in enumerate(token_classes(capture, layer).items()):
                pairs = causal & members[None, :]
                self.pairs[layer, c] += float(pairs.sum())
                self.tokens[layer, c] += float(members.sum())
                self.sums["attention"][layer, c] += float(attention[pairs].sum())
                self.sums["contribution"][layer, c] += float(contribution[pairs].sum())
                self.sums["value_norm"][layer, c] += float(value_norm[members].sum())

    def result(self) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {
                "classes": list(TOKEN_CLASSES),
                "attention": np.where(self.pairs > 0, self.sums["attention"] / self.pairs, np.nan),
                "contribution": np.where(self.pairs > 0, self.sums["contribution"] / self.pairs, np.nan),
                "value_norm": np.where(self.tokens > 0, self.sums["value_norm"] / self.tokens, np.nan),
                "tokens": self.tokens,
            }
            out["contribution_per_attention"] = np.where(
                self.sums["attention"] > 0, self.sums["contribution"] / self.sums["attention"], np.nan)
        return out


def residual_contributions(captures) -> dict:
    """Per layer x class means over an iterable of captures made with ``values=True``."""
    table = None
    for capture in captures:
        table = table or ResidualTable(capture.num_layers)
        table.add(capture)
    if table is None:
        raise ValueError("residual_contributions needs at least one prompt")
    return table.result()


def residual_figure(result: dict, path: str | Path) -> Path:
    """Per layer: mean attention per token, value norm, and contribution per unit of attention, by class."""
    from .figures import layer_ticks, legend_outside, save_figure, subplots

    panels = [("attention", "mean attention a_ij (head mean)"),
              ("value_norm", "mean ||W_OV x_j|| (head mean)"),
              ("contribution", "mean ||sum_h a_ij W_OV x_j||"),
              ("contribution_per_attention", "contribution per unit attention")]
    fig, axes = subplots(1, len(panels), panel=(3.4, 3.0))
    layers = np.arange(result["attention"].shape[0])
    for ax, (key, title) in zip(axes, panels):
        for c, name in enumerate(result["classes"]):
            values = result[key][:, c]
            if np.isfinite(values).any():
                ax.plot(layers, values, marker="o", ms=3, label=name, color=f"C{c}")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("layer")
        layer_ticks(ax, len(layers))
        if key in ("attention", "contribution") and np.nanmin(result[key]) > 0:
            ax.set_yscale("log")
    legend_outside(axes[-1], fontsize=7)
    fig.suptitle("what each token class writes through attention (eligible text queries)", fontsize=9)
    return save_figure(fig, path)
