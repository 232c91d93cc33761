"""The pure tensor math of VAR (docs/method.md#redistribution) on materialized attention weights: the reference.

Every other path (the fast attention backend, the benchmarks' released-style loop) is checked
against :func:`redistribute`.
"""

from __future__ import annotations

import torch

from .config import COMPAT_MODES, removed_fraction

# The released code adds this per visual key to the visual mass in its head test denominator
# (docs/method.md#the-released-code).
RELEASED_CODE_EPS_PER_VISUAL_KEY = 1e-6


def select_rows(
    visual_mass: torch.Tensor,
    visual_sink_mass: torch.Tensor,
    num_visual_keys: torch.Tensor,
    *,
    rho: float,
    min_visual_attention: float,
    compat: str = "paper",
) -> torch.Tensor:
    """The image-centric head test per (batch, head, query): a bool tensor of the masses' shape.

    ``num_visual_keys`` broadcasts against the masses (shape ``[batch, 1, 1]`` for ``[batch, heads, queries]``).
    """
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat={compat!r} is not valid; choose one of {list(COMPAT_MODES)}")
    enough_visual = visual_mass >= min_visual_attention
    if compat == "paper":
        nonsink_ratio = (visual_mass - visual_sink_mass) / visual_mass.clamp_min(torch.finfo(visual_mass.dtype).tiny)
        return enough_visual & (visual_mass > 0) & (nonsink_ratio >= rho)
    # Released code: sink ratio m_SV / (m_V + eps * |V|) <= rho (its rho is 1 - the paper's).
    denominator = visual_mass + RELEASED_CODE_EPS_PER_VISUAL_KEY * num_visual_keys
    sink_ratio = visual_sink_mass / denominator.clamp_min(torch.finfo(visual_mass.dtype).tiny)
    return enough_visual & (sink_ratio <= rho)


def redistribute(
    weights: torch.Tensor,
    visual_mask: torch.Tensor,
    sink_mask: torch.Tensor,
    query_mask: torch.Tensor,
    *,
    rho: float,
    p: float,
    min_visual_attention: float,
    compat: str = "paper",
    skip_without_visual_sink: bool = True,
    receivers: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply VAR to attention weights.

    weights: ``[batch, heads, queries, keys]`` (rows sum to 1); visual_mask, sink_mask: bool ``[batch, keys]``;
    query_mask: bool ``[batch, queries]`` (eligible queries). Returns new weights of the same shape and dtype.
    Rows that are not selected, or whose non-sink visual mass is zero, are returned unchanged.
    ``skip_without_visual_sink``: a sample whose keys hold no visual sink is left untouched (released code).
    ``receivers``: bool ``[batch, keys]``, the keys the budget goes to (default: the non-sink visual keys, VAR;
    the analysis ablations give it to text tokens instead).
    """
    if weights.dim() != 4:
        raise ValueError(f"weights must be [batch, heads, queries, keys], got shape {tuple(weights.shape)}")
    batch, _, queries, keys = weights.shape
    for name, mask, length in (("visual_mask", visual_mask, keys), ("sink_mask", sink_mask, keys),
                               ("query_mask", query_mask, queries)):
        if mask.shape != (batch, length) or mask.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor of shape {(batch, length)}, got {mask.dtype} {tuple(mask.shape)}")

    w = weights.float()
    visual = visual_mask[:, None, None, :]  # (B, 1, 1, K)
    sink = sink_mask[:, None, None, :]
    visual_sink = visual & sink
    receiving = visual & ~sink if receivers is None else receivers[:, None, None, :]

    visual_mass = (w * visual).sum(-1)  # (B, H, Q)
    visual_sink_mass = (w * visual_sink).sum(-1)
    sink_mass = (w * sink).sum(-1)
    receiving_mass = (w * receiving).sum(-1)

    selected = select_rows(
        visual_mass, visual_sink_mass, visual_mask.sum(-1)[:, None, None].float(),
        rho=rho, min_visual_attention=min_visual_attention, compat=compat,
    )
    selected &= query_mask[:, None, :] & (receiving_mass > 0)
    if skip_without_visual_sink:
        selected &= (visual_mask & sink_mask).any(-1)[:, None, None]

    removed = removed_fraction(p, compat)
    budget = removed * sink_mass  # Omega, (B, H, Q)
    gain = budget / receiving_mass.clamp_min(torch.finfo(w.dtype).tiny)  # per unit of receiving weight
    changed = torch.where(sink, (1.0 - removed) * w, w)
    changed = torch.where(receiving, w * (1.0 + gain[..., None]), changed)
    return torch.where(selected[..., None], changed, w).to(weights.dtype)
