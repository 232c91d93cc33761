"""The attention function vasink registers with transformers (``attn_implementation="vasink"``).

Two paths compute the same thing (docs/method.md#the-fast-path):

- ``reference`` materializes ``[batch, heads, queries, keys]`` weights and calls :func:`redistribute`.
- ``fast`` builds no weight tensor. On CUDA (with Triton) it is one fused kernel (``fused_attention.py``).
  Elsewhere it runs the stock SDPA kernel, then corrects only the eligible query rows with the identity
  ``o' = o - p * o_S + p * m_S * o_N / m_N``: ``m_N`` and ``o_N / m_N`` come from one attention call
  restricted to the non-sink visual keys (on CPU a kernel that returns the log-sum-exp, so masses are
  ``exp(lse_N - lse)``; other devices a bounded math pass), and the sink terms from the few sink keys.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .fused_attention import fused_var_attention, use_fused
from .redistribute import redistribute, select_rows

ATTENTION_NAME = "vasink"
STATE_ATTR = "_vasink_state"
ROW_CHUNK = 256  # eligible query rows per correction call: bounds the additive mask at ROW_CHUNK x keys
KERNEL_LSE_DEVICES = ("cpu",)  # devices whose SDPA kernel we call directly for its log-sum-exp
SMALL_ROWS = 4  # calls with at most this many query rows (decode) take the direct path: (heads x keys) per row


def register() -> None:
    """Register vasink's attention and mask functions with transformers (idempotent)."""
    AttentionInterface.register(ATTENTION_NAME, var_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def var_attention_forward(module: nn.Module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query: (B, H, Q, hd); key, value: (B, Hkv, K, hd); attention_mask: bool (B, 1, Q, K) or None (causal)."""
    state = getattr(module, STATE_ATTR, None)
    if state is None:
        raise RuntimeError(
            "attention implementation 'vasink' reached a module that vasink.enable did not prepare; "
            "switch models with vasink.enable(model, config) / vasink.disable(model), not by setting attn_implementation"
        )
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    plan = state.plan(module.layer_idx, query.shape[2], key.shape[2])
    stock_mask = attention_mask
    if attention_mask is None and key.shape[2] > state.num_keys:
        # A static cache's empty slots follow the sequence and transformers leaves the mask out at its prefill
        # (SDPA's upper-left causal alignment): say which keys each query sees, as the paths below assume.
        attention_mask = causal_keys(query.shape[2], key.shape[2], state.num_keys - query.shape[2], query.device)
    if plan is not None and plan.visual_keys.device != query.device:  # a model split over devices (device_map)
        plan = plan.to(query.device)
    if state.intervention is not None:  # analysis: any change of the weights, on the reference path
        return reference_attention(module, query, key, value, attention_mask, scaling, plan, state.config,
                                   rule=state.intervention)
    if state.config.implementation == "reference" or (plan is not None and state.original_implementation == "eager"):
        # an eager model returns every layer's weights (a None in their place would shift outputs.attentions):
        # the redistributed ones; SDPA returns none, as the stock SDPA model does
        return reference_attention(module, query, key, value, attention_mask, scaling, plan, state.config)
    if plan is None:
        return stock_attention(module, query, key, value, stock_mask, scaling, dropout, state, **kwargs)
    if use_fused(query.device, query.shape[-1]):  # GPU: VAR inside one attention kernel (prefill and decode)
        allowed = None if attention_mask is None else allowed_keys(attention_mask, query.shape[2], key.shape[2],
                                                                   query.device)
        return fused_var_attention(query, key, value, allowed, scaling, plan, state.config), None
    if query.shape[2] <= SMALL_ROWS:
        # Decode: a row's weights are (heads x keys), the size SDPA itself builds; one pass beats three.
        out, _ = reference_attention(module, query, key, value, attention_mask, scaling, plan, state.config)
        return out, None
    if query.device.type in KERNEL_LSE_DEVICES:  # the CPU flash kernel returns every row's log-sum-exp for free
        out, lse = cpu_attention_with_lse(module, query, key, value, attention_mask, scaling)
    else:
        out, _ = stock_attention(module, query, key, value, attention_mask, scaling, dropout, state, **kwargs)
        lse = None
    return correct_eligible_rows(out, lse, query, key, value, attention_mask, scaling, plan, state.config), None


def cpu_attention_with_lse(module, query, key, value, attention_mask, scaling):
    """SDPA's CPU flash kernel called directly to keep its log-sum-exp: out (B, Q, H, hd), lse (B, H, Q)."""
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    num_queries, num_keys = query.shape[2], key.shape[2]
    if attention_mask is None and num_queries == num_keys:
        out, lse = cpu_flash_attention_with_lse(query, key, value, None, scaling, is_causal=True)
    else:
        allowed = allowed_keys(attention_mask, num_queries, num_keys, query.device)
        out, lse = cpu_flash_attention_with_lse(query, key, value, allowed, scaling)
    return out.transpose(1, 2).contiguous(), lse


def cpu_flash_attention_with_lse(query, key, value, allowed, scaling, is_causal=False):
    """query (B, H, R, hd), key/value (B, H, K, hd), allowed bool (B, 1, R, K) or None -> out (B, H, R, hd), lse (B, H, R)."""
    mask = None if allowed is None else additive_mask(allowed, query.dtype)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, attn_mask=mask, is_causal=is_causal, scale=scaling)


def stock_attention(module, query, key, value, attention_mask, scaling, dropout, state, **kwargs):
    """The model's own attention (sdpa or eager), as it runs without vasink."""
    if state.original_implementation == "eager":
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward")
        if attention_mask is None and key.shape[2] > state.num_keys:  # a static cache's empty slots (see above)
            allowed = causal_keys(query.shape[2], key.shape[2], state.num_keys - query.shape[2], query.device)
        else:
            allowed = allowed_keys(attention_mask, query.shape[2], key.shape[2], query.device)
        additive = additive_mask(allowed, query.dtype)
        return eager(module, query, key, value, additive, scaling=scaling, dropout=dropout, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


# -- masks -------------------------------------------------------------------------------------------------


def allowed_keys(attention_mask, num_queries: int, num_keys: int, device) -> torch.Tensor:
    """Bool (B or 1, 1, Q, K): which keys each query may attend to. ``None`` means causal, the queries being the
    last Q keys."""
    if attention_mask is None:
        return causal_keys(num_queries, num_keys, num_keys - num_queries, device)
    if attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2


def causal_keys(num_queries: int, num_keys: int, first_query: int, device) -> torch.Tensor:
    """Bool (1, 1, Q, K): causal attention for queries at key positions ``first_query, ..., first_query + Q - 1``."""
    query_pos = torch.arange(first_query, first_query + num_queries, device=device)
    return (torch.arange(num_keys, device=device)[None, :] <= query_pos[:, None])[None, None]


def allowed_rows(attention_mask, rows: torch.Tensor, num_queries: int, num_keys: int) -> torch.Tensor:
    """Bool (B, 1, R, K) for the query rows ``rows`` (B, R) (values in [0, Q))."""
    batch, num_rows = rows.shape
    if attention_mask is None:
        query_pos = rows + (num_keys - num_queries)  # (B, R)
        return (torch.arange(num_keys, device=rows.device)[None, None, :] <= query_pos[..., None])[:, None]
    allowed = allowed_keys(attention_mask, num_queries, num_keys, rows.device).expand(batch, -1, -1, -1)
    return allowed.gather(2, rows[:, None, :, None].expand(batch, 1, num_rows, num_keys))


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


# -- reference path ----------------------------------------------------------------------------------------


def var_rule(weights, plan, config, layer_idx=None):
    """VAR itself as a weights rule: ``(weights (B, H, Q, K) float32, plan, config, layer) -> weights``."""
    return redistribute(
        weights, plan.visual_keys, plan.sink_keys, plan.eligible_queries,
        rho=config.rho, p=config.p, min_visual_attention=config.min_visual_attention, compat=config.compat,
        skip_without_visual_sink=config.skip_layers_without_visual_sink,
    )


def reference_attention(module, query, key, value, attention_mask, scaling, plan, config, rule=var_rule):
    """Eager attention with ``rule`` (VAR by default) applied to the materialized weights; returns them too."""
    groups = getattr(module, "num_key_value_groups", 1)
    key_states, value_states = repeat_kv(key, groups), repeat_kv(value, groups)  # (B, H, K, hd)
    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # (B, H, Q, K)
    allowed = allowed_keys(attention_mask, query.shape[2], key.shape[2], query.device)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32)
    if plan is not None:
        weights = rule(weights, plan, config, module.layer_idx)
    weights = weights.to(query.dtype)
    out = torch.matmul(weights, value_states).transpose(1, 2).contiguous()  # (B, Q, H, hd)
    return out, weights


# -- fast path ---------------------------------------------------------------------------------------------


def eligible_row_index(eligible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Q) bool -> rows (B, E) with eligible positions first (padded with Q), valid (B, E) bool."""
    counts = eligible.sum(1)
    num_rows = int(counts.max())
    order = torch.argsort((~eligible).to(torch.int8), dim=1, stable=True)[:, :num_rows]
    valid = torch.arange(num_rows, device=eligible.device)[None, :] < counts[:, None]
    return torch.where(valid, order, eligible.shape[1]), valid


def attention_with_lse(query, key, value, allowed, scaling):
    """Softmax attention that also returns the log-sum-exp of each row's logits.

    query (B, H, R, hd), key/value (B, Hkv, K, hd), allowed bool (B, 1, R, K) -> out (B, H, R, hd), lse (B, H, R).
    Rows with no allowed key give out 0 and an lse the caller must ignore.
    """
    batch, heads, num_rows, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    # Fold the query heads of one KV group into the row axis instead of copying keys (GQA).
    q = query.reshape(batch, kv_heads, groups * num_rows, head_dim)  # (B, Hkv, g*R, hd)
    rows_allowed = allowed.expand(batch, 1, num_rows, -1).repeat(1, 1, groups, 1)  # (B, 1, g*R, K)
    if query.device.type in KERNEL_LSE_DEVICES:
        out, lse = cpu_flash_attention_with_lse(q, key, value, rows_allowed, scaling)
    else:  # bounded by ROW_CHUNK rows; a kernel that returns lse on this device would avoid the weights
        scores = torch.matmul(q, key.transpose(2, 3)) * scaling
        scores = scores.masked_fill(~rows_allowed, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        out = torch.matmul(torch.exp(scores - lse[..., None]).nan_to_num(0.0), value)
    return out.reshape(batch, heads, num_rows, head_dim), lse.reshape(batch, heads, num_rows)


def correct_eligible_rows(out, lse, query, key, value, attention_mask, scaling, plan, config):
    """Apply VAR to the stock output ``out`` (B, Q, H, hd) on the eligible rows of ``plan``.

    ``lse`` (B, H, Q): the log-sum-exp of each row's logits when the kernel gave it, else None.
    """
    batch, heads, num_queries, head_dim = query.shape
    num_keys = key.shape[2]
    rows, row_valid = eligible_row_index(plan.eligible_queries)  # (B, E)
    key32, value32 = key.float(), value.float()
    groups = heads // key.shape[1]
    keys = KeyGroups(plan, key32, value32, groups)
    removed = config.removed_fraction

    batch_index = torch.arange(batch, device=out.device)[:, None]
    for start in range(0, rows.shape[1], ROW_CHUNK):
        chunk, chunk_valid = rows[:, start:start + ROW_CHUNK], row_valid[:, start:start + ROW_CHUNK]
        safe = chunk.clamp_max(num_queries - 1)
        q = query.gather(2, safe[:, None, :, None].expand(batch, heads, -1, head_dim)).float()  # (B, H, R, hd)
        allowed = allowed_rows(attention_mask, safe, num_queries, num_keys) | ~chunk_valid[:, None, :, None]
        rows_lse = None if lse is None else lse.gather(2, safe[:, None, :].expand(batch, heads, -1)).float()
        sink_mass, visual_sink_mass, nonsink_mass, sink_output, nonsink_output = group_masses(
            q, keys, allowed, scaling, rows_lse)

        selected = select_rows(
            nonsink_mass + visual_sink_mass, visual_sink_mass, keys.num_visual,
            rho=config.rho, min_visual_attention=config.min_visual_attention, compat=config.compat,
        )
        selected &= chunk_valid[:, None, :] & (nonsink_mass > 0)
        if config.skip_layers_without_visual_sink:
            selected &= keys.has_visual_sink[:, None, None]
        # o' = o - p o_S + (p m_S / m_N) o_N
        gain = removed * sink_mass / nonsink_mass.clamp_min(torch.finfo(torch.float32).tiny)
        delta = gain[..., None] * nonsink_output - removed * sink_output  # (B, H, R, hd)
        delta = torch.where(selected[..., None], delta, 0.0).transpose(1, 2)  # (B, R, H, hd)

        # ``out`` is this call's own fresh tensor: write the corrected rows in place.
        rows_b, rows_q = batch_index.expand_as(safe)[chunk_valid], safe[chunk_valid]
        out[rows_b, rows_q] = (out[rows_b, rows_q].float() + delta[chunk_valid]).to(out.dtype)
    return out


class KeyGroups:
    """The key groups VAR rescales, for one layer call: sinks S, visual sinks, non-sink visual N."""

    def __init__(self, plan, key32, value32, groups: int):
        batch, kv_heads, num_keys, head_dim = key32.shape
        self.key, self.value, self.groups = key32, value32, groups
        self.sink = plan.sink_keys  # (B, K)
        self.visual_sink = plan.visual_keys & plan.sink_keys
        self.nonsink_visual = plan.visual_keys & ~plan.sink_keys
        self.has_visual_sink = self.visual_sink.any(-1)  # (B,)
        # The key span holding every non-sink visual key of the batch: the attention call over N reads only
        # these columns (views, no copy), not the whole sequence. Empty N: one column, masked out.
        columns = self.nonsink_visual.any(0).nonzero().flatten()
        self.nonsink_span = (int(columns[0]), int(columns[-1]) + 1) if len(columns) else (0, 1)
        self.num_visual = plan.visual_keys.sum(-1).float()[:, None, None]  # (B, 1, 1)
        index, valid = eligible_row_index(plan.sink_keys)  # (B, nS) sink positions, padded with K
        self.sink_index = index.clamp_max(num_keys - 1)
        self.sink_valid = valid
        self.sink_is_visual = plan.visual_keys.gather(1, self.sink_index) & valid  # (B, nS)
        gather = self.sink_index[:, None, :, None].expand(batch, kv_heads, -1, head_dim)
        self.sink_keys = repeat_kv(key32.gather(2, gather), groups)  # (B, H, nS, hd): a handful of tokens
        self.sink_values = repeat_kv(value32.gather(2, gather), groups)


def group_masses(q, keys: KeyGroups, allowed, scaling, lse=None):
    """Masses and outputs of the key groups for query rows ``q`` (B, H, R, hd), without the weight tensor.

    ``lse`` (B, H, R): the rows' log-sum-exp if known. Returns m_S, m_SV, m_N (B, H, R) and the unnormalized
    group outputs o_S, o_N (B, H, R, hd).
    """
    batch, _, num_rows, _ = q.shape
    if lse is None:
        _, lse = attention_with_lse(q, keys.key, keys.value, allowed, scaling)  # (B, H, R)
    lo, hi = keys.nonsink_span
    allowed_nonsink = allowed[..., lo:hi] & keys.nonsink_visual[:, None, None, lo:hi]  # (B, 1, R, span)
    nonsink_mean, lse_nonsink = attention_with_lse(q, keys.key[:, :, lo:hi], keys.value[:, :, lo:hi],
                                                   allowed_nonsink, scaling)
    has_nonsink = allowed_nonsink.any(-1)  # (B, 1, R)
    nonsink_mass = torch.where(has_nonsink, torch.exp(lse_nonsink - lse), 0.0)
    nonsink_mean = torch.where(has_nonsink[..., None], nonsink_mean, 0.0)

    sink_allowed = allowed.gather(3, keys.sink_index[:, None, None, :].expand(batch, 1, num_rows, -1))
    sink_allowed = sink_allowed & keys.sink_valid[:, None, None, :]
    sink_scores = torch.matmul(q, keys.sink_keys.transpose(2, 3)) * scaling  # (B, H, R, nS)
    sink_weights = torch.where(sink_allowed, torch.exp(sink_scores - lse[..., None]), 0.0)
    sink_mass = sink_weights.sum(-1)
    visual_sink_mass = (sink_weights * keys.sink_is_visual[:, None, None, :]).sum(-1)
    sink_output = torch.matmul(sink_weights, keys.sink_values)
    return sink_mass, visual_sink_mass, nonsink_mass, sink_output, nonsink_mean * nonsink_mass[..., None]
