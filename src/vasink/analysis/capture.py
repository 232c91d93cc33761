"""One forward of one prompt, with everything the analyses read: phi, sinks, attention rows, value norms.

    capture = capture_forward(model, inputs, config)                 # stock weights, eager math
    after = capture_forward(model, inputs, config, var_on=True)       # the same with VAR (reference path)
    pai = capture_forward(model, inputs, config, method="pai", stock_twin=True)
    pai.weights - pai.stock_weights                                   # what PAI itself changed in each layer

Hooks on the decoder layers read the hidden state entering each layer (phi, the sink-dimension
evidence), the attention weights of the non-visual query rows (text-to-image maps, the head test) and,
for the residual contribution, ``v_proj``'s output folded through ``o_proj`` into a per-token Gram
matrix of the heads' value vectors (so no ``[queries, keys, hidden]`` tensor is ever built). No model
code is forked: the weights come from transformers' own eager attention, or from vasink's reference
path when VAR is on, or from PAI's / VAF's own attention paths (asked for the weights) when they are.

Under a method, a wrapper registered at the same ``AttentionInterface`` seam asks the method's attention
function for its weights; with ``stock_twin`` it also runs transformers' eager attention on the same queries,
keys and values, so the method's own edit of each layer is ``weights - stock_weights``: zero in the layers it
leaves alone, whatever earlier layers changed in the hidden states.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .. import attention
from ..api import HANDLE_ATTR, var
from ..config import FIRST_SEARCHED_LAYER, VARConfig
from ..models import adapter_for, split_inputs
from ..sinks import dimension_ratios, resolve_sink_dims, sink_dimension_value
from ..state import token_layout
from .methods import attention_method


@dataclass
class Capture:
    """One prompt (batch of one) seen through one forward. Positions index the prompt's tokens (T)."""

    input_ids: torch.Tensor  # (T,)
    visual: torch.Tensor  # (T,) bool: image placeholder tokens
    eligible: torch.Tensor  # (T,) bool: VAR's query rows (text tokens after the first visual token)
    sink_dims: tuple[int, ...]
    tau: float
    phi: torch.Tensor  # (L, T) float32, on the hidden state entering each layer
    sinks: torch.Tensor  # (L, T) bool: phi > tau; all False in layers 0 and 1 (never searched: docs/method.md#sink-tokens-per-layer)
    first_token_ratio: torch.Tensor | None  # (L, D): |x_d| / RMS(x) of the first token entering each layer
    median_token_ratio: torch.Tensor | None  # (L, D): the median of the same over the other tokens
    query_positions: torch.Tensor  # (R,) long: the rows kept in ``weights`` (every text token)
    weights: torch.Tensor | None  # (L, H, R, K) float32 attention rows of ``query_positions``
    value_gram: torch.Tensor | None  # (L, K, H, H): <W_O^h v^h_j, W_O^g v^g_j> per key token j
    stock_weights: torch.Tensor | None = None  # (L, H, R, K): stock attention of the same queries and keys

    @property
    def num_layers(self) -> int:
        return self.phi.shape[0]

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    @property
    def first_token(self) -> int:
        return 0  # a batch of one has no padding: position 0 is BOS

    def visual_sinks(self, layer: int) -> torch.Tensor:
        return self.sinks[layer] & self.visual

    def text_sinks(self, layer: int) -> torch.Tensor:
        return self.sinks[layer] & ~self.visual

    def rows(self, positions) -> torch.Tensor:
        """Indices into the R axis of ``weights`` for token ``positions`` (negative counts from the end)."""
        length = len(self.input_ids)
        index = {int(p): r for r, p in enumerate(self.query_positions.tolist())}
        out = []
        for position in positions:
            absolute = position + length if position < 0 else position
            if absolute not in index:
                raise ValueError(
                    f"query token {position} is not a text token of the prompt (it has {length} tokens, "
                    f"image tokens at {_span(self.visual)}); pick a text position such as -1 (the last token)")
            out.append(index[absolute])
        return torch.tensor(out, dtype=torch.long)

    def eligible_rows(self) -> torch.Tensor:
        """Indices into the R axis of ``weights`` of VAR's eligible queries."""
        return self.eligible[self.query_positions].nonzero().flatten()


def _span(mask: torch.Tensor) -> str:
    positions = mask.nonzero().flatten().tolist()
    return f"{positions[0]}..{positions[-1]}" if positions else "none"


@contextmanager
def eager_attention(model: nn.Module):
    """Run the text backbone with transformers' eager attention (the weights are materialized), then restore."""
    adapter = adapter_for(model)
    current = adapter.text_config(model)._attn_implementation
    handle = getattr(model, HANDLE_ATTR, None)
    if current == attention.ATTENTION_NAME or (handle is not None and handle.active):
        raise RuntimeError("a vasink method (VAR or a peer) is enabled on this model; analysis runs on the model as "
                           "loaded: call vasink.disable(model) first")
    adapter.set_text_attention(model, "eager")
    try:
        yield model
    finally:
        adapter.set_text_attention(model, current)


PROBE_NAME = "vasink-analysis-probe"
PROBE_ATTR = "_vasink_analysis_probe"


class WeightsProbe:
    """One capture's seam around the attention function a method installed (``inner``): it asks that function
    for its weights and, with ``stock``, keeps per layer the eager weights of the same queries and keys."""

    def __init__(self, inner: str, stock: bool):
        self.inner, self.stock = inner, stock
        self.stock_weights: dict[int, torch.Tensor] = {}  # layer -> (B, H, Q, K)


class _Eager:
    """What ``vasink.attention.stock_attention`` reads of a state: run eager over every key the call has."""

    original_implementation = "eager"

    def __init__(self, num_keys: int):
        self.num_keys = num_keys


def probe_attention_forward(module: nn.Module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            **kwargs):
    """The method's own attention function asked for its weights (``output_attentions``, as transformers asks:
    only the text backbone is asked, not the vision tower), and the stock eager weights of the same inputs.

    query: (B, H, Q, hd); key, value: (B, Hkv, K, hd); attention_mask: bool (B, 1, Q, K) or None (causal)."""
    probe = getattr(module, PROBE_ATTR)
    out, weights = ALL_ATTENTION_FUNCTIONS[probe.inner](module, query, key, value, attention_mask, scaling=scaling,
                                                        dropout=dropout, **{**kwargs, "output_attentions": True})
    if probe.stock:
        scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
        _, probe.stock_weights[module.layer_idx] = attention.stock_attention(
            module, query, key, value, attention_mask, scaling, dropout, _Eager(key.shape[2]))  # (B, H, Q, K)
    return out, weights


@contextmanager
def probed_attention(model: nn.Module, probe: WeightsProbe):
    """While a method is on: its attention function wrapped by :func:`probe_attention_forward`, then restored."""
    AttentionInterface.register(PROBE_NAME, probe_attention_forward)
    AttentionMaskInterface.register(PROBE_NAME, sdpa_mask)  # the methods' own mask: bool, or None when causal
    adapter = adapter_for(model)
    modules = adapter.attention_modules(model)
    for module in modules:
        setattr(module, PROBE_ATTR, probe)
    adapter.set_text_attention(model, PROBE_NAME)
    try:
        yield probe
    finally:
        adapter.set_text_attention(model, probe.inner)
        for module in modules:
            delattr(module, PROBE_ATTR)


@torch.no_grad()
def capture_forward(model: nn.Module, inputs, config: VARConfig, *, var_on: bool = False, method=None,
                    stock_twin: bool = False, weights: bool = True, values: bool = False, ratios: bool = False,
                    intervention=None) -> Capture:
    """One forward of ``inputs`` (batch of one) with hooks; see :class:`Capture` for what is kept.

    ``var_on``: run with VAR (``config``, reference path) so ``weights`` are VAR's; ``intervention``: a
    weights rule (see ``vasink.enable``) instead. ``method``: ``"var"`` (the same as ``var_on``), ``"pai"``,
    ``"vaf"`` or a config of one of them (:func:`vasink.analysis.methods.attention_method`; PAI without its
    guidance): ``weights`` are that method's; VCD, which changes no attention, is refused. ``stock_twin``
    (with a method): also keep ``stock_weights``, the stock attention of each layer's own queries and keys
    (``weights - stock_weights`` is what the method itself changed there).
    ``values``: also keep the per-token value Gram matrices for
    :func:`vasink.analysis.residual.residual_contributions` (needs ``v_proj`` / ``o_proj`` modules).
    ``ratios``: also keep every dimension's ``|x_d| / RMS(x)`` of the first and the median token (the sink
    dimension figure; a median over tokens per layer, so only when asked).
    """
    if var_on and method is not None:
        raise ValueError("pass var_on=True or method=..., not both (var_on=True is method='var')")
    if intervention is not None and method is not None:
        raise ValueError("an intervention runs in place of VAR; pass it without method=...")
    if var_on:
        method = "var"
    method_on = attention_method(method, config) if method is not None else None
    if stock_twin and method_on is None:
        raise ValueError("stock_twin keeps the stock attention next to a method's: pass method=...")
    input_ids, extra_inputs = split_inputs(inputs)
    if input_ids.shape[0] != 1:
        raise ValueError(f"capture_forward analyses one prompt at a time; got a batch of {input_ids.shape[0]}")
    adapter = adapter_for(model)
    sink_dims = resolve_sink_dims(config.sink_dims, adapter.text_config(model))
    layers = adapter.decoder_layers(model)
    attention_modules = adapter.attention_modules(model)
    layout = token_layout(adapter, model, input_ids, extra_inputs.get("attention_mask"), extra_inputs)
    visual, eligible = layout.visual[0].cpu(), layout.eligible[0].cpu()  # (T,): the layout VAR itself uses
    query_positions = (~layout.placeholder[0].cpu()).nonzero().flatten()  # text tokens (image newlines excluded)
    query_index = query_positions.to(input_ids.device)

    phi, first_ratio, median_ratio, rows, grams = {}, {}, {}, {}, {}

    def on_layer_input(layer_idx, hidden):  # hidden (1, T, D)
        phi[layer_idx] = sink_dimension_value(hidden, sink_dims)[0].cpu()
        if ratios:
            per_dim = dimension_ratios(hidden[0])  # (T, D)
            first_ratio[layer_idx] = per_dim[0].cpu()
            median_ratio[layer_idx] = (per_dim[1:].median(0).values if len(per_dim) > 1 else per_dim[0] * 0).cpu()

    def on_attention(layer_idx, output):
        attn_weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if attn_weights is None:
            raise RuntimeError(f"layer {layer_idx}'s attention returned no weights; the analysis needs eager "
                               "attention (it switches to it itself: do not force another implementation)")
        rows[layer_idx] = attn_weights[0][:, query_index].float().cpu()  # (H, R, K)

    def on_values(layer_idx, module, value_states):
        grams[layer_idx] = value_gram(module, value_states[0]).cpu()

    handles = []
    for layer_idx, (layer, module) in enumerate(zip(layers, attention_modules)):
        handles.append(layer.register_forward_pre_hook(
            lambda m, args, kwargs, i=layer_idx: on_layer_input(i, args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True))
        if weights:
            handles.append(module.register_forward_hook(lambda m, args, output, i=layer_idx: on_attention(i, output)))
        if values:
            if not (hasattr(module, "v_proj") and hasattr(module, "o_proj")):
                raise ValueError(f"the residual contribution needs v_proj/o_proj on the attention modules; "
                                 f"{type(module).__name__} has neither: run without it")
            handles.append(module.v_proj.register_forward_hook(
                lambda m, args, output, i=layer_idx, attn=module: on_values(i, attn, output)))
    probe = None
    try:
        if intervention is not None:
            run_config = config.replace(implementation="reference")
            with var(model, run_config, intervention=intervention):
                model(**inputs)
        elif method_on is not None:
            with var(model, method_on):
                probe = WeightsProbe(adapter.text_config(model)._attn_implementation, stock=stock_twin)
                with probed_attention(model, probe):
                    model(**inputs)
        elif weights:
            with eager_attention(model):
                model(**inputs)
        else:
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()

    num_layers = len(layers)
    phi_all = torch.stack([phi[i] for i in range(num_layers)])  # (L, T)
    sinks = phi_all > config.tau
    sinks[:FIRST_SEARCHED_LAYER] = False
    return Capture(
        input_ids=input_ids[0].cpu(), visual=visual, eligible=eligible, sink_dims=tuple(sink_dims), tau=config.tau,
        phi=phi_all, sinks=sinks,
        first_token_ratio=torch.stack([first_ratio[i] for i in range(num_layers)]) if ratios else None,
        median_token_ratio=torch.stack([median_ratio[i] for i in range(num_layers)]) if ratios else None,
        query_positions=query_positions,
        weights=torch.stack([rows[i] for i in range(num_layers)]) if weights else None,
        value_gram=torch.stack([grams[i] for i in range(num_layers)]) if values else None,
        stock_weights=torch.stack([probe.stock_weights[i][0][:, query_index].float().cpu()
                                   for i in range(num_layers)]) if stock_twin else None,
    )


def value_gram(module: nn.Module, value_states: torch.Tensor) -> torch.Tensor:
    """Per token j, the Gram matrix of its per-head outputs u^h_j = W_O^h v^h_j: ``(T, H, H)`` float32.

    value_states: ``v_proj``'s output ``(T, Hkv * hd)``. With grouped-query attention query head h reads
    KV head ``h // groups``. ``||sum_h a^h u^h_j||^2 = a^T G_j a`` gives the residual contribution.
    """
    head_dim = module.head_dim
    weight = module.o_proj.weight.float()  # (D, H * hd)
    num_heads = weight.shape[1] // head_dim
    tokens = value_states.shape[0]
    values = value_states.float().reshape(tokens, -1, head_dim).transpose(0, 1)  # (Hkv, T, hd)
    values = values.repeat_interleave(num_heads // values.shape[0], dim=0)  # (H, T, hd)
    per_head_out = weight.reshape(weight.shape[0], num_heads, head_dim).permute(1, 0, 2)  # (H, D, hd)
    outputs = torch.einsum("htk,hdk->htd", values, per_head_out)  # (H, T, D)
    return torch.einsum("htd,gtd->thg", outputs, outputs)
