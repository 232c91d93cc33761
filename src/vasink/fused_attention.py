"""VAR fused into one attention kernel (Triton), for GPUs: one pass over the keys, no weight tensor, no host sync.

The fast path's identity (``attention.py``) needs, per query row, the attention masses of three key groups
(sinks S, visual sinks SV, non-sink visual N) and the unnormalized outputs of S and N. A flash-attention
loop gets them for the price of three accumulators instead of one: the online softmax rescales all of them
by the same factor, and each key block adds ``p @ v`` to a group's accumulator only when the block holds
keys of that group (sinks are a handful of tokens, so ``acc_S`` is touched in a few blocks). The epilogue
applies the head test and ``o' = o - p o_S + (p m_S / m_N) o_N`` per row and writes the output in the
layout transformers' attention functions return, ``(B, Q, H, hd)``.

Triton is imported on first use. With ``TRITON_INTERPRET=1`` set before that, the same kernel runs on CPU
tensors through Triton's interpreter (how the tests check it on machines without a GPU).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .redistribute import RELEASED_CODE_EPS_PER_VISUAL_KEY

FUSED_DEVICES = ("cuda",)  # devices where the fast path runs the fused kernel (when Triton imports)
SINK_BIT, VISUAL_BIT = 1, 2  # key group flags, (B, K) uint8
MAX_HEAD_DIM = 256  # larger heads would not fit the kernel's three accumulators: the unfused route takes them


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_fused(device: torch.device, head_dim: int) -> bool:
    return device.type in FUSED_DEVICES and head_dim <= MAX_HEAD_DIM and triton_available()


def fused_var_attention(query, key, value, allowed, scaling, plan, config) -> torch.Tensor:
    """VAR attention in one kernel.

    query (B, H, Q, hd); key, value (B, Hkv, K, hd); allowed: bool (B or 1, 1, Q, K), or None for causal
    (query i sees keys up to K - Q + i). ``plan``: visual_keys, sink_keys (B, K), eligible_queries (B, Q).
    Returns out (B, Q, H, hd) in the query's dtype.
    """
    kernel = _kernel()
    batch, heads, num_queries, head_dim = query.shape
    kv_heads, num_keys = key.shape[1], key.shape[2]
    out = torch.empty(batch, num_queries, heads, head_dim, dtype=query.dtype, device=query.device)
    keys = key_flags(plan)
    eligible = memoized(plan.call_memo, f"eligible_uint8@{query.device}",
                        lambda: plan.eligible_queries.to(torch.uint8))  # (B, Q)
    if allowed is None:
        mask, mask_strides = eligible, (0, 0, 0)  # unused pointer
    else:
        mask = allowed.expand(batch, 1, num_queries, num_keys).view(torch.uint8)
        mask_strides = (mask.stride(0), mask.stride(2), mask.stride(3))

    block_d = max(16, 1 << (head_dim - 1).bit_length())
    block_m = 16 if num_queries <= 16 or block_d > 128 else 32
    block_n = 64 if block_d <= 128 else 32
    grid = (-(-num_queries // block_m), batch * heads)
    kernel[grid](
        query, key, value, out, mask, keys.groups, eligible, keys.has_visual_sink, keys.num_visual,
        *query.stride(), *key.stride(), *value.stride(), *out.stride(), *mask_strides,
        *keys.groups.stride(), *eligible.stride(),
        heads, heads // kv_heads, num_queries, num_keys, keys.groups.shape[1], head_dim,
        float(scaling), float(config.rho), float(config.min_visual_attention), float(config.removed_fraction),
        RELEASED_CODE_EPS_PER_VISUAL_KEY,
        HAS_MASK=allowed is not None, PAPER=config.compat == "paper",
        SKIP_WITHOUT_VISUAL_SINK=bool(config.skip_layers_without_visual_sink),
        IEEE=query.dtype == torch.float32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=4 if block_m <= 32 and block_d <= 128 else 8,
    )
    return out


@dataclass
class KeyFlags:
    """Per-sample key facts the kernel reads; keys from ``groups.shape[1]`` on are neither sinks nor visual."""

    groups: torch.Tensor  # (B, G) uint8: SINK_BIT | VISUAL_BIT
    has_visual_sink: torch.Tensor  # (B,) uint8
    num_visual: torch.Tensor  # (B,) float32


def key_flags(plan) -> KeyFlags:
    """Built once per layer and generation (at prefill) where the plan offers a memo; decode keys add nothing."""

    def build() -> KeyFlags:
        visual, sinks = plan.visual_keys, plan.sink_keys
        return KeyFlags(groups=(sinks.to(torch.uint8) * SINK_BIT) | (visual.to(torch.uint8) * VISUAL_BIT),
                        has_visual_sink=(visual & sinks).any(-1).to(torch.uint8),
                        num_visual=visual.sum(-1).float())

    if plan.sliced:
        return build()
    flags = memoized(plan.layer_memo, "key_flags", build)
    if flags.groups.shape[1] > plan.visual_keys.shape[1]:  # a memo from a longer sequence: not this one
        flags = plan.layer_memo["key_flags"] = build()
    return flags


def memoized(memo: dict | None, name: str, make):
    if memo is None:
        return make()
    if name not in memo:
        memo[name] = make()
    return memo[name]


def _kernel():
    from .fused_kernel import var_attention_kernel  # imports Triton (which reads TRITON_INTERPRET then)

    return var_attention_kernel
