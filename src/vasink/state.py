"""Per-call state of an enabled model: token layout, sinks per layer, prefill or decode.

One :class:`VARState` belongs to one enabled handle (or one ``detect_sinks`` call). Forward pre-hooks
fill it: the model's own hook reads ``input_ids`` / the cache to set the token layout, and a hook on
each decoder layer computes phi on the hidden states entering that layer during prefill.

Sinks are found once per prompt, at its first forward (the prefill), and every later step of the same
generation reuses them (docs/method.md#sink-tokens-per-layer). A forward is one of:

- **prefill**: no cached tokens, and not a cache-free step (below): the prompt; its sinks are found.
- **decode**: over a cache that holds the tokens seen so far (dynamic or static cache, or a sliding window's
  tail); the new tokens are never sinks and are all eligible queries.
- **cache-free step** (``generate(..., use_cache=False)``): a forward called with ``use_cache=False`` and no
  cache whose ``input_ids`` begin with the last prompt's ids (and attention mask), are exactly one token
  longer than the previous forward and hold no image placeholder after the prompt. The prompt's sinks are
  reused, and the tokens after the prompt are treated as decode tokens: the same result as the cached run.
  Any other cache-free forward is a new prompt.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .config import VARConfig
from .models import ModelAdapter
from .sinks import sink_dim_index, sink_dimension_value


@dataclass
class LayerPlan:
    """What the attention function of one layer needs for one call; keys cover the whole cache."""

    visual_keys: torch.Tensor  # (B, K) bool
    sink_keys: torch.Tensor  # (B, K) bool
    eligible_queries: torch.Tensor  # (B, Q) bool
    # Where an attention path may keep tensors derived from the plan: ``layer_memo`` lives for one layer
    # through one generation (sinks and visual keys are fixed at prefill; decode keys are neither), and
    # ``call_memo`` for one forward call, shared by its layers. None: derive everything afresh.
    layer_memo: dict | None = None
    call_memo: dict | None = None
    sliced: bool = False  # keys are a sliding window's tail, not the whole sequence: layer_memo does not apply

    def to(self, device) -> LayerPlan:
        """The plan on ``device`` (the memos stay shared: a layer stays on its device)."""
        return dataclasses.replace(self, visual_keys=self.visual_keys.to(device), sink_keys=self.sink_keys.to(device),
                                   eligible_queries=self.eligible_queries.to(device))


@dataclass
class TokenLayout:
    """Which prompt tokens VAR treats how; every mask (B, T) bool."""

    visual: torch.Tensor  # V: image tokens (real ones, not padding)
    placeholder: torch.Tensor  # every token the vision features replace (V plus e.g. LLaVA-NeXT's newlines)
    valid: torch.Tensor  # not padding
    eligible: torch.Tensor  # VAR's query rows: real, non-placeholder tokens after the first visual token


def token_layout(adapter: ModelAdapter, model: nn.Module, input_ids: torch.Tensor, attention_mask, inputs: dict):
    """The prompt's :class:`TokenLayout` (``inputs``: the model's other inputs: image sizes, grids, ...)."""
    visual = adapter.visual_mask(model, input_ids, **inputs)  # (B, T)
    placeholder = adapter.placeholder_mask(model, input_ids, **inputs) | visual
    valid = real_keys(attention_mask, input_ids.shape[1])
    valid = valid if valid is not None else torch.ones_like(visual)
    after_first_image = placeholder.long().cumsum(-1) > 0
    return TokenLayout(visual=visual & valid, placeholder=placeholder, valid=valid,
                       eligible=after_first_image & ~placeholder & valid)


def refuse_image_after_prefill(adapter: ModelAdapter, model: nn.Module, input_ids: torch.Tensor, method: str) -> None:
    """A forward over a non-empty cache whose new tokens (B, N > 1) hold image placeholders is a prompt cut in
    chunks (``generate(..., prefill_chunk_size=...)``): the image spans are read at the prompt's first forward,
    so the method would miss these images and silently act as if they were text. Refuse it."""
    if input_ids.shape[1] > 1 and bool(adapter.placeholder_mask(model, input_ids).any()):
        raise RuntimeError(
            f"vasink's {method} saw image placeholders in a forward over a non-empty cache (chunked prefill?); "
            "run the prompt in one prefill (generate(..., prefill_chunk_size=None))"
        )


def pixel_inputs(kwargs: dict) -> dict:
    """The floating pixel tensors among a model call's keyword inputs (images, videos)."""
    return {key: value for key, value in kwargs.items() if key.startswith("pixel_values")
            and isinstance(value, torch.Tensor) and value.is_floating_point()}


def real_keys(attention_mask, length: int) -> torch.Tensor | None:
    """(B, length) bool: which of the first ``length`` positions are real tokens (not padding), from whatever mask
    the model is called with: a 2D padding mask, a 4D mask (B, 1, Q, K) (bool or additive), or a dict of 4D masks
    per layer type (generate builds those for a static cache). None when there is no mask."""
    if isinstance(attention_mask, dict):
        attention_mask = attention_mask.get("full_attention", next(iter(attention_mask.values()), None))
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        return attention_mask[:, :length].bool()
    allowed = attention_mask if attention_mask.dtype == torch.bool \
        else attention_mask > torch.finfo(attention_mask.dtype).min / 2
    return allowed[:, 0].any(1)[:, :length]  # a key no query may attend to is padding


class PrefillMask:
    """A (B, T) bool mask fixed at prefill, read over a longer sequence: later (decoded) positions are False.

    ``over(length)`` returns a view of one zero-padded buffer that doubles when outgrown, so a decode step
    makes no new tensor."""

    def __init__(self, prefill: torch.Tensor):
        self.prefill = prefill  # (B, T)
        self._buffer = prefill

    def over(self, length: int) -> torch.Tensor:
        if length > self._buffer.shape[1]:
            buffer = self.prefill.new_zeros(self.prefill.shape[0], max(length, 2 * self._buffer.shape[1]))
            buffer[:, :self.prefill.shape[1]] = self.prefill
            self._buffer = buffer
        return self._buffer[:, :length]


class CallGuard:
    """Whether the hooked model's own forward is running. The token layout is read by a pre-hook on the whole
    model, so a decoder layer run from a direct call of a submodule (``model.model(...)``, the language model
    alone) would apply the previous call's layout to other tokens, or none: such calls are refused."""

    def __init__(self, method: str):
        self.method = method
        self.running = False

    def install(self, model: nn.Module) -> list:
        return [model.register_forward_pre_hook(self._enter),
                model.register_forward_hook(self._leave, always_call=True)]  # after an exception too

    def _enter(self, module, args) -> None:
        self.running = True

    def _leave(self, module, args, output) -> None:
        self.running = False

    def check(self) -> None:
        if not self.running:
            raise RuntimeError(
                f"vasink's {self.method} is on, but a decoder layer ran outside a call of the whole model (a direct "
                f"call of model.model or of the language model?); call the model itself (model(...), "
                f"model.generate) with input_ids, or switch {self.method} off first"
            )


class VARState:
    def __init__(self, model: nn.Module, adapter: ModelAdapter, config: VARConfig, sink_dims: tuple[int, ...],
                 record_phi: bool = False, original_implementation: str = "sdpa", intervention=None):
        self.model = model
        # analysis hook: (weights, plan, config, layer) -> weights, run on the reference path instead of VAR
        self.intervention = intervention
        self.original_implementation = original_implementation  # what untouched layers run
        self.adapter = adapter
        self.config = config
        self.sink_dims = sink_dims
        self.num_layers = len(adapter.decoder_layers(model))
        self.modified_layers = frozenset(config.modified_layers(self.num_layers))
        self.record_phi = record_phi
        self.sink_index: torch.Tensor | None = None  # sink_dims as an index tensor on the layers' device
        self.guard = CallGuard("VAR")
        self.reset()

    def reset(self) -> None:
        self.phase = "idle"  # "prefill", "decode" or "cache-free" (a step of a generation without cache)
        self.num_keys = 0  # positions seen in this sequence (prefill + decoded)
        # A preallocated (static) cache hands every layer all its slots: keys past num_keys are empty slots.
        self.preallocated_cache = False
        self.prompt_ids: torch.Tensor | None = None  # (B, T) the prompt's input_ids: recognizes a cache-free step
        self.prompt_pixels: dict = {}  # the prompt's pixel tensors (same check: the same images)
        self.prompt_eligible: torch.Tensor | None = None  # (B, T) eligible prompt rows
        self.visual: PrefillMask | None = None  # visual keys; decoded tokens are never visual
        self.valid_keys: torch.Tensor | None = None  # (B, T_prefill) False on padding
        self.eligible_queries: torch.Tensor | None = None  # (B, Q) of the current call
        # Whether this call has eligible queries, known without a device sync per decode step: at prefill
        # eligible_queries.any(); at decode, whether the prompt had a visual token (new tokens are eligible).
        self.any_eligible = False
        self.any_visual = False
        self.has_visual_sink: dict[int, bool] = {}  # layer -> any visual sink in the batch, fixed at prefill
        self.sinks: dict[int, torch.Tensor] = {}  # layer -> (B, T_prefill) bool
        self.phi: dict[int, torch.Tensor] = {}  # layer -> (B, T_prefill), only when record_phi
        self.layer_memos: dict[int, dict] = {}  # layer -> LayerPlan.layer_memo, for this generation
        self.sink_masks: dict[int, PrefillMask] = {}  # layer -> its sinks over the growing sequence
        self.call_memo: dict = {}  # LayerPlan.call_memo of the current forward call

    # -- hooks -------------------------------------------------------------------------------------------

    def on_model_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.call_memo = {}
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ValueError(
                "vasink needs input_ids to find the image tokens; call the model with input_ids "
                "(not inputs_embeds) while VAR or sink detection is active"
            )
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None else 0
        attention_mask = kwargs.get("attention_mask")
        batch, new = input_ids.shape
        if past == 0 and cache is None and kwargs.get("use_cache") is False \
                and self._continues_prompt(input_ids, attention_mask, kwargs):
            self._begin_cache_free_step(input_ids, attention_mask)
        elif past == 0:
            inputs = {k: v for k, v in kwargs.items() if k != "input_ids"}  # image sizes, grids: the adapter's
            self._begin_prefill(input_ids, attention_mask, inputs)
            self.preallocated_cache = bool(getattr(cache, "is_compileable", False))
        else:
            refuse_image_after_prefill(self.adapter, self.model, input_ids, "VAR")
            self._begin_decode(batch, new, past, attention_mask, input_ids.device)

    def _begin_prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, inputs: dict) -> None:
        self.reset()
        self.phase = "prefill"
        layout = token_layout(self.adapter, self.model, input_ids, attention_mask, inputs)
        self.num_keys = input_ids.shape[1]
        self.visual = PrefillMask(layout.visual)
        self.valid_keys = layout.valid
        self.eligible_queries = layout.eligible
        self.any_eligible = bool(self.eligible_queries.any())
        self.any_visual = bool(self.visual.prefill.any())
        self.prompt_ids = input_ids.clone()
        self.prompt_pixels = pixel_inputs(inputs)
        self.prompt_eligible = self.eligible_queries

    def _continues_prompt(self, input_ids: torch.Tensor, attention_mask, kwargs: dict) -> bool:
        """Whether a cache-free forward is the next step of the last prompt's generation (module docstring): the
        prompt's ids and padding followed by one token, over the same images (or none given)."""
        if self.phase not in ("prefill", "cache-free") or self.prompt_ids is None:
            return False
        pixels = pixel_inputs(kwargs)
        if pixels and (pixels.keys() != self.prompt_pixels.keys() or not all(
                value is self.prompt_pixels[key] or (value.shape == self.prompt_pixels[key].shape
                                                     and torch.equal(value, self.prompt_pixels[key]))
                for key, value in pixels.items())):
            return False
        prompt = self.prompt_ids
        batch, length = input_ids.shape
        if batch != prompt.shape[0] or length != self.num_keys + 1 or input_ids.device != prompt.device:
            return False
        if not torch.equal(input_ids[:, :prompt.shape[1]], prompt):
            return False
        real = real_keys(attention_mask, prompt.shape[1])
        if real is not None and not torch.equal(real, self.valid_keys):
            return False
        return not bool(self.adapter.placeholder_mask(self.model, input_ids[:, prompt.shape[1]:]).any())

    def _begin_cache_free_step(self, input_ids: torch.Tensor, attention_mask) -> None:
        """The prompt and the tokens generated so far, recomputed: the prompt's sinks and layout; the tokens after
        the prompt are decode tokens (never sinks or visual; eligible where real)."""
        self.phase = "cache-free"
        prompt_length = self.prompt_ids.shape[1]
        self.num_keys = input_ids.shape[1]
        real = real_keys(attention_mask, input_ids.shape[1])
        real = real if real is not None else torch.ones_like(input_ids, dtype=torch.bool)
        generated = real[:, prompt_length:]  # (B, new)
        self.eligible_queries = torch.cat([self.prompt_eligible, generated], dim=1)  # (B, T + new)
        self.any_eligible = bool(self.prompt_eligible.any()) or self.any_visual

    def _begin_decode(self, batch: int, new: int, past: int, attention_mask, device) -> None:
        if self.visual is None or self.num_keys != past:
            raise RuntimeError(
                f"vasink saw a decode step over {past} cached tokens but no matching prefill "
                f"(the sequence so far has {self.num_keys if self.visual is not None else None} tokens); "
                "enable VAR before the first forward of a generation"
            )
        self.phase = "decode"
        self.num_keys = past + new
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 \
                and attention_mask.shape[1] == past + new:
            self.eligible_queries = attention_mask[:, past:].bool()  # (B, new): real new tokens
        else:
            self.eligible_queries = torch.ones(batch, new, dtype=torch.bool, device=device)
        self.any_eligible = self.any_visual

    def on_layer_input(self, layer_idx: int, hidden_states: torch.Tensor) -> None:
        if self.phase != "prefill":
            return
        if not (self.record_phi or layer_idx in self.modified_layers):
            return
        if hidden_states.shape[1] != self.valid_keys.shape[1]:
            raise RuntimeError(
                f"decoder layer {layer_idx} sees {hidden_states.shape[1]} tokens but the model's input_ids have "
                f"{self.valid_keys.shape[1]}: this model expands placeholders inside forward; its adapter must "
                "describe the decoder's token positions (see the vasink.models docstring)"
            )
        if self.sink_index is None or self.sink_index.device != hidden_states.device:
            self.sink_index = sink_dim_index(self.sink_dims, hidden_states)  # once per device, not per layer
        phi = sink_dimension_value(hidden_states, self.sink_index)  # (B, T)
        self.sinks[layer_idx] = (phi > self.config.tau) & self.valid_keys
        self.has_visual_sink[layer_idx] = bool((self.sinks[layer_idx] & self.visual.prefill).any())
        if self.record_phi:
            self.phi[layer_idx] = phi

    # -- what the attention function asks --------------------------------------------------------------

    @property
    def visual_keys(self) -> torch.Tensor | None:
        """(B, K) over every position seen in this sequence."""
        return None if self.visual is None else self.visual.over(self.num_keys)

    def plan(self, layer_idx: int, num_queries: int, num_keys: int) -> LayerPlan | None:
        """The VAR plan for this layer and call, or None when VAR leaves the layer untouched."""
        if layer_idx not in self.modified_layers or layer_idx not in self.sinks or self.visual is None:
            return None
        # A sliding-window cache layer (Gemma 3, Mistral) hands a decode step only the last num_keys keys; a
        # static cache hands all its slots, the sequence's first num_keys and empty ones after it.
        window_decode = self.phase == "decode" and num_keys < self.num_keys
        empty_slots = self.preallocated_cache and num_keys > self.num_keys
        if num_keys != self.num_keys and not (window_decode or empty_slots):
            raise RuntimeError(
                f"vasink: decoder layer {layer_idx} got {num_keys} keys, but the sequence it saw through the model's "
                f"input_ids has {self.num_keys} tokens; call the whole model (not its decoder alone) with input_ids "
                "while VAR is on"
            )
        eligible = self.eligible_queries
        if eligible is None or eligible.shape[1] != num_queries or not self.any_eligible:
            return None
        if self.config.skip_layers_without_visual_sink and not self.has_visual_sink[layer_idx]:
            return None
        if layer_idx not in self.sink_masks:
            self.sink_masks[layer_idx] = PrefillMask(self.sinks[layer_idx])
        # A sliding window slices the keys; whether the layer has a visual sink was judged at prefill.
        start = max(self.num_keys - num_keys, 0)
        visual = self.visual.over(start + num_keys)[:, start:]  # (B, num_keys): empty slots are False
        sinks = self.sink_masks[layer_idx].over(start + num_keys)[:, start:]
        return LayerPlan(visual_keys=visual, sink_keys=sinks, eligible_queries=eligible,
                         layer_memo=self.layer_memos.setdefault(layer_idx, {}), call_memo=self.call_memo,
                         sliced=window_decode)


def install_hooks(model: nn.Module, adapter: ModelAdapter, state: VARState) -> list:
    """Register the state's pre-hooks; returns the hook handles (call ``.remove()`` on each)."""
    handles = [*state.guard.install(model), model.register_forward_pre_hook(state.on_model_call, with_kwargs=True)]
    for layer_idx, layer in enumerate(adapter.decoder_layers(model)):
        def on_layer(module, args, kwargs, layer_idx=layer_idx):
            state.guard.check()
            hidden_states = args[0] if args else kwargs["hidden_states"]
            state.on_layer_input(layer_idx, hidden_states)
        handles.append(layer.register_forward_pre_hook(on_layer, with_kwargs=True))
    return handles
