"""PAI's and VAF's attention edits as an attention function registered with transformers ("vasink-peers").

Both change pre-softmax logits ``z = q.k * scaling`` of one layer, never the weights after the softmax:

- PAI (LALBJ/PAI attention.py): ``z + alpha * |z|`` on the image keys of the LAST query row of each forward,
  after the mask. One row: it is computed directly ((heads x keys) logits, the size of a decode step) and
  written over the stock output.
- VAF (ClearSight AttnAdapter.py): ``z * image_scale`` on image keys and ``z * system_scale`` on the system
  keys (real tokens before the first image token), signed, before the mask, on the text rows after the image
  (prefill) and every decode row. ``(q . k_j) * c_j = q . (c_j k_j)``: it is the stock kernel over keys scaled
  per position, no weights materialized.

Weights: when the caller reads them (``output_attentions=True``, or a model loaded with eager attention) every
layer runs transformers' eager attention and returns its post-softmax weights (B, H, Q, K), the edited rows
being the ones the output was computed from (PAI's recomputed last row, VAF's rows over the scaled keys).
Otherwise the fast path above runs and the weights are None, as SDPA's.

Image keys are every token the vision features replace (the adapter's placeholder mask: LLaVA-NeXT's row
newlines included, wrapper tokens such as ``<|vision_start|>`` not), found from ``input_ids`` at prefill.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..attention import allowed_keys, causal_keys, stock_attention
from ..models import ModelAdapter
from ..state import CallGuard, PrefillMask, refuse_image_after_prefill, token_layout
from .config import PAIConfig, VAFConfig

ATTENTION_NAME = "vasink-peers"
STATE_ATTR = "_vasink_peer_state"


def register() -> None:
    AttentionInterface.register(ATTENTION_NAME, peer_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


class PeerState:
    """The token spans of the sequence being generated, set by a pre-hook on the model's forward."""

    def __init__(self, model: nn.Module, adapter: ModelAdapter, config: PAIConfig | VAFConfig,
                 original_implementation: str):
        self.model, self.adapter, self.config = model, adapter, config
        self.original_implementation = original_implementation  # what untouched layers (and calls) run
        self.modified_layers = frozenset(config.modified_layers(len(adapter.decoder_layers(model))))
        self.bypass = False  # True during a contrast pass (PAI's no-image prompt runs the unmodified model)
        self.num_keys = 0  # positions of the sequence so far
        self.image: PrefillMask | None = None  # (B, T) image keys
        self.system: PrefillMask | None = None  # (B, T) real keys before the first image key (rows with an image)
        self.rows: torch.Tensor | None = None  # (B, Q) VAF's rows of the current call
        self.any_image = False
        self.guard = CallGuard(config.method.upper())

    def on_model_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.bypass:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ValueError(f"vasink's {self.config.method.upper()} needs input_ids to find the image tokens; call "
                             "the model with input_ids (not inputs_embeds)")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None else 0
        batch, new = input_ids.shape
        if past == 0:  # a prompt (or, without a cache, the whole sequence so far)
            inputs = {k: v for k, v in kwargs.items() if k != "input_ids"}
            layout = token_layout(self.adapter, self.model, input_ids, kwargs.get("attention_mask"), inputs)
            image = layout.placeholder & layout.valid
            has_image = image.any(-1, keepdim=True)
            self.image = PrefillMask(image)
            self.system = PrefillMask(layout.valid & (image.long().cumsum(-1) == 0) & has_image)
            self.rows = layout.eligible  # real non-image tokens after the first image token
            self.any_image = bool(has_image.any())
            self.num_keys = new
            self.static_cache = bool(getattr(cache, "is_compileable", False))
            return
        if self.image is None or past != self.num_keys:
            raise RuntimeError(f"vasink saw a decode step over {past} cached tokens but no matching prompt "
                               f"({self.num_keys} tokens seen); enable the method before the generation's first forward")
        refuse_image_after_prefill(self.adapter, self.model, input_ids, self.config.method.upper())
        if isinstance(self.config, PAIConfig) and self.config.alpha > 0 and new > 1:
            raise RuntimeError("vasink's PAI edits the last row of each forward, so a prompt run in chunks (chunked "
                               "prefill) would be edited at every chunk's end; run the prompt in one prefill "
                               "(generate(..., prefill_chunk_size=None))")
        self.num_keys = past + new
        self.rows = torch.ones(batch, new, dtype=torch.bool, device=input_ids.device)  # every decoded row

    def keys(self, mask: PrefillMask, num_keys: int) -> torch.Tensor:
        """(B, num_keys) view of ``mask``: a sliding window's tail, or a static cache's slots (empty ones False)."""
        start = max(self.num_keys - num_keys, 0)
        return mask.over(start + num_keys)[:, start:]


def peer_attention_forward(module: nn.Module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                           **kwargs):
    """query: (B, H, Q, hd); key, value: (B, Hkv, K, hd); attention_mask: bool (B, 1, Q, K) or None (causal)."""
    state = getattr(module, STATE_ATTR, None)
    if state is None:
        raise RuntimeError(f"attention implementation {ATTENTION_NAME!r} reached a module vasink.enable did not "
                           "prepare; switch methods with vasink.enable / vasink.disable")
    state.guard.check()
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    stock = _Stock(state, key, weights_wanted(state, kwargs))
    if state.bypass or not state.any_image or module.layer_idx not in state.modified_layers:
        return stock_attention(module, query, key, value, attention_mask, scaling, dropout, stock, **kwargs)
    if attention_mask is None and key.shape[2] > state.num_keys:  # a static cache's empty slots, unmasked
        attention_mask = causal_keys(query.shape[2], key.shape[2], state.num_keys - query.shape[2], query.device)
    if isinstance(state.config, PAIConfig):
        return pai_attention(module, query, key, value, attention_mask, scaling, dropout, state, stock, **kwargs)
    return vaf_attention(module, query, key, value, attention_mask, scaling, dropout, state, stock, **kwargs)


def weights_wanted(state: PeerState, kwargs: dict) -> bool:
    """Whether the caller reads the attention weights: an eager model always returns them (transformers' eager
    attention does), any model when called with ``output_attentions=True``."""
    return state.original_implementation == "eager" or bool(kwargs.get("output_attentions"))


class _Stock:
    """What ``stock_attention`` reads of a state: the implementation to run (eager when the weights are read)
    and the sequence length (a bypassed call, the contrast pass, has its own)."""

    def __init__(self, state: PeerState, key: torch.Tensor, weights: bool):
        self.original_implementation = "eager" if weights else state.original_implementation
        self.num_keys = key.shape[2] if state.bypass else state.num_keys
        self.weights = weights


def pai_attention(module, query, key, value, attention_mask, scaling, dropout, state, stock, **kwargs):
    """Stock attention, then the last query row recomputed with ``z + alpha * |z|`` on its image keys; with
    ``stock.weights``, the stock (eager) weights with that row replaced by the recomputed one."""
    batch, heads, num_queries, head_dim = query.shape
    num_keys = key.shape[2]
    stock_weights = None
    if num_queries > 1:
        out, stock_weights = stock_attention(module, query, key, value, attention_mask, scaling, dropout, stock,
                                             **kwargs)
    else:
        out = query.new_empty(batch, 1, heads, head_dim)
    groups = heads // key.shape[1]
    keys, values = repeat_kv(key, groups).float(), repeat_kv(value, groups).float()  # (B, H, K, hd)
    logits = torch.matmul(query[:, :, -1:].float(), keys.transpose(2, 3)) * scaling  # (B, H, 1, K)
    allowed = allowed_keys(attention_mask, num_queries, num_keys, query.device)[:, :, -1:]  # (B|1, 1, 1, K)
    image = state.keys(state.image, num_keys)[:, None, None, :] & allowed  # (B, 1, 1, K)
    logits = torch.where(image, logits + state.config.alpha * logits.abs(), logits)
    logits = logits.masked_fill(~allowed, float("-inf"))
    weights = F.softmax(logits, dim=-1)  # (B, H, 1, K)
    out[:, -1:] = torch.matmul(weights, values).transpose(1, 2).to(out.dtype)  # (B, 1, H, hd)
    if not stock.weights:
        return out, None
    weights = weights.to(query.dtype)
    if stock_weights is None:  # a decode step: its one row is the last
        return out, weights
    return out, torch.cat([stock_weights[:, :, :-1], weights], dim=2)  # (B, H, Q, K)


def vaf_attention(module, query, key, value, attention_mask, scaling, dropout, state, stock, **kwargs):
    """The stock kernel over keys scaled per position (image x image_scale, system x system_scale) for VAF's
    rows; the other rows keep the stock output. With ``stock.weights`` the kernel is eager and the weights of
    the same rows are taken the same way."""
    num_queries, num_keys = query.shape[2], key.shape[2]
    config = state.config
    scale = torch.ones(key.shape[0], num_keys, dtype=torch.float32, device=key.device)
    scale = scale.masked_fill(state.keys(state.image, num_keys), config.image_scale)
    scale = scale.masked_fill(state.keys(state.system, num_keys), config.system_scale)
    scaled_key = (key.float() * scale[:, None, :, None]).to(key.dtype)  # (B, Hkv, K, hd)
    rows = state.rows  # (B, Q)
    if num_queries == 1 or bool(rows.all()):  # decode: every row
        return stock_attention(module, query, scaled_key, value, attention_mask, scaling, dropout, stock, **kwargs)
    out, weights = stock_attention(module, query, key, value, attention_mask, scaling, dropout, stock, **kwargs)
    if not bool(rows.any()):
        return out, weights
    first = int(rows.any(0).nonzero()[0])  # the first row any prompt of the batch edits
    allowed = allowed_keys(attention_mask, num_queries, num_keys, query.device)[:, :, first:]
    edited, edited_weights = stock_attention(module, query[:, :, first:], scaled_key, value, allowed, scaling,
                                             dropout, stock, **kwargs)  # (B, Q - first, H, hd)
    out[:, first:] = torch.where(rows[:, first:, None, None], edited, out[:, first:])
    if weights is None:
        return out, None
    tail = torch.where(rows[:, None, first:, None], edited_weights, weights[:, :, first:])  # (B, H, Q - first, K)
    return out, torch.cat([weights[:, :, :first], tail], dim=2)
