"""PAI's guidance and VCD's contrast: the next-token logits of every forward, contrasted with a second pass.

A forward hook on the model runs the second pass right after each forward of the model (so inside
``model.generate`` at every step, the first included) and replaces the last position's logits:

- PAI (LALBJ/PAI CFG.py): the same prompt without its image (every image placeholder token removed; wrapper
  tokens such as ``<|vision_start|>`` stay), through the unmodified model. With ``s`` and ``u`` the two
  log-softmaxes: ``gamma * (s - u) + u``, -inf where ``s < log(cutoff) + max s``.
- VCD (DAMO-NLP-SG/VCD vcd_sample.py, after its 2024-07 fix): the same prompt over the diffusion-noised image
  (``noise.py``): ``(1 + alpha) * l - alpha * l_noised``, -inf where ``l < log(beta) + max l``.

VCD's contrast prompt has the same tokens, mask and positions as the main one (only the pixels differ), so by
default both run as ONE forward of 2B rows (``ContrastPass.batch``): a forward pre-hook appends the noised rows
to every batch input (ids, mask, positions, token types, the pixels noised, their grids and sizes) and the model
runs them over the generation's own cache, which then holds 2B rows (main rows, then noised rows; the cache
``generate`` returns included); the forward hook splits the logits back. Qwen-VL's rope deltas stay the main
rows' between forwards (``generate`` reads them). A cache allocated before the prompt (static cache with early
initialization) cannot take 2B rows: VCD then runs the second pass separately, as PAI always does (its
no-image prompt is shorter than the main one: its rows would not line up with the main rows in one cache).
Separately, the second pass keeps its own cache (a ``DynamicCache``, whatever cache the generation uses): at a
prompt it prefills, at a decode step it feeds the same new tokens. Without a cache (``use_cache=False``) each forward
is recomputed whole, as the main pass is; VCD then reuses the noise drawn for the same pixel tensor. The
noised pixels are drawn once per prompt; with ``VCDConfig.seed`` each image's noise depends only on the seed
and that image's pixels, not on the rest of the batch (``noise.py``). Processors and warpers (temperature, top-k, top-p) act on the
contrasted logits, as in both official codes. Beam search is refused (``handle.refusing_beams``): the second
pass's cache is not reordered with the beams (the official codes do not either).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import DynamicCache

from ..models import ModelAdapter
from ..state import real_keys
from .config import PAIConfig, VCDConfig
from .noise import noised_batch_pixels

CACHE_KEYS = ("cache", "past_key_values")
# integer (B, T) inputs that follow input_ids token by token: filtered with them for the no-image prompt
TOKEN_ALIGNED_KEYS = ("token_type_ids", "mm_token_type_ids")
# what the no-image pass keeps of the main call's keyword arguments besides ids, mask, positions, cache
TEXT_ONLY_KEYS = ("use_cache", "logits_to_keep", "return_dict")
# the grid that cuts a flattened pixel tensor (Qwen-VL's patches) into its images (VCD's noise per image)
GRID_KEYS = {"pixel_values": "image_grid_thw", "pixel_values_videos": "video_grid_thw"}


def pai_guidance(logits: torch.Tensor, uncond_logits: torch.Tensor, gamma: float, cutoff: float) -> torch.Tensor:
    """PAI's CFGLogits (B, V): gamma * (s - u) + u in log-probs; tokens with s < log(cutoff) + max s are -inf."""
    cond, uncond = logits.float().log_softmax(-1), uncond_logits.float().log_softmax(-1)
    out = gamma * (cond - uncond) + uncond
    return out.masked_fill(cond < math.log(cutoff) + cond.max(-1, keepdim=True).values, float("-inf"))


def vcd_contrast(logits: torch.Tensor, noised_logits: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """VCD (B, V): (1 + alpha) * l - alpha * l_noised; tokens with l < log(beta) + max l are -inf."""
    logits, noised_logits = logits.float(), noised_logits.float()
    out = (1 + alpha) * logits - alpha * noised_logits
    return out.masked_fill(logits < math.log(beta) + logits.max(-1, keepdim=True).values, float("-inf"))


class ContrastPass:
    """The second pass of one enabled model: its inputs, its cache, and the logits rule."""

    def __init__(self, model: nn.Module, adapter: ModelAdapter, config: PAIConfig | VCDConfig, peer_state=None):
        self.model, self.adapter, self.config = model, adapter, config
        self.peer_state = peer_state  # PAI's attention state: bypassed during the no-image pass
        self.running = False
        # VCD: main and noised rows as one forward of 2B rows (False: a separate second pass, with its own cache)
        self.batch = isinstance(config, VCDConfig)
        self.paired = False  # the current generation runs paired (set at its prompt)
        self.rows: int | None = None  # B of the paired forward in flight (set by the pre-hook, read by the hook)
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, T) 2D mask of the contrast sequence so far
        self.positions: torch.Tensor | None = None  # (B, 1) last text position of the contrast sequence (PAI)
        self.noised: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # key -> (pixels, noised pixels)
        # model state a forward writes for later steps (Qwen-VL's rope deltas): saved around the second pass
        self.stateful = [m for m in model.modules() if hasattr(m, "rope_deltas")]

    def on_model_call(self, module: nn.Module, args: tuple, kwargs: dict):
        """Forward pre-hook: with ``batch`` (VCD), the call's B rows followed by their B noised rows."""
        self.rows = None
        if self.running or not self.batch or len(args) > 1:
            return None
        kwargs = dict(kwargs)
        if args:
            kwargs.setdefault("input_ids", args[0])
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            raise ValueError(f"vasink's {self.config.method.upper()} needs input_ids; call the model with input_ids")
        cache = next((kwargs[k] for k in CACHE_KEYS if kwargs.get(k) is not None), None)
        if cache is None or int(cache.get_seq_length()) == 0:  # a prompt: pair it unless its cache is allocated
            self.paired = not any(getattr(layer, "is_initialized", False) for layer in getattr(cache, "layers", ()))
            if not self.paired:
                return None
            noised = self._noise(kwargs, reuse=cache is None)
        elif not self.paired:
            return None
        else:
            noised = {}
        rows = input_ids.shape[0]
        for m in self.stateful:  # Qwen-VL: the deltas of the rows the model reads at decode steps without positions
            if isinstance(m.rope_deltas, torch.Tensor) and m.rope_deltas.shape[0] == rows:
                m.rope_deltas = torch.cat([m.rope_deltas, m.rope_deltas])
        self.rows = rows
        return (), _paired(kwargs, noised)

    def on_model_output(self, module: nn.Module, args: tuple, kwargs: dict, output):
        if self.running:
            return None
        if self.rows is not None:
            return self._split(output)
        kwargs = dict(kwargs)
        if args:
            kwargs.setdefault("input_ids", args[0])
        if kwargs.get("input_ids") is None:
            raise ValueError(f"vasink's {self.config.method.upper()} needs input_ids; call the model with input_ids")
        cache = next((kwargs[k] for k in CACHE_KEYS if kwargs.get(k) is not None), None)
        # the main cache already holds this forward's tokens
        past = int(cache.get_seq_length()) - kwargs["input_ids"].shape[1] if cache is not None else 0
        if past == 0:
            second = self._prompt_inputs(kwargs, uses_cache=cache is not None)
        else:
            second = self._decode_inputs(kwargs)
        contrast_logits = self._run(second).logits[:, -1]  # (B, V)
        logits = output.logits
        last = logits[:, -1]
        if isinstance(self.config, PAIConfig):
            combined = pai_guidance(last, contrast_logits, self.config.gamma, self.config.cutoff)
        else:
            combined = vcd_contrast(last, contrast_logits, self.config.alpha, self.config.beta)
        logits = logits.clone()
        logits[:, -1] = combined.to(logits.dtype)
        output.logits = logits
        return output

    def _split(self, output):
        """The paired forward's output as the main rows', their last logits contrasted with the noised rows'."""
        rows, self.rows = self.rows, None
        for m in self.stateful:
            if isinstance(m.rope_deltas, torch.Tensor) and m.rope_deltas.shape[0] == 2 * rows:
                m.rope_deltas = m.rope_deltas[:rows]
        logits = output.logits[:rows].clone()  # (B, T, V)
        noised = output.logits[rows:, -1]  # (B, V)
        logits[:, -1] = vcd_contrast(logits[:, -1], noised, self.config.alpha, self.config.beta).to(logits.dtype)
        output.logits = logits
        for key in ("hidden_states", "attentions"):
            if isinstance(getattr(output, key, None), tuple):
                setattr(output, key, tuple(t[:rows] for t in getattr(output, key)))
        return output

    def _run(self, inputs: dict):
        saved = [(m, m.rope_deltas) for m in self.stateful]
        self.running = True
        if self.peer_state is not None:
            self.peer_state.bypass = True
        try:
            with torch.no_grad():
                return self.model(**inputs)
        finally:
            self.running = False
            if self.peer_state is not None:
                self.peer_state.bypass = False
            for m, value in saved:
                m.rope_deltas = value

    # -- the second pass's inputs ------------------------------------------------------------------------

    def _prompt_inputs(self, kwargs: dict, uses_cache: bool) -> dict:
        input_ids = kwargs["input_ids"]
        real = real_keys(kwargs.get("attention_mask"), input_ids.shape[1])
        real = real if real is not None else torch.ones_like(input_ids, dtype=torch.bool)
        self.cache = DynamicCache(config=self.model.config) if uses_cache else None
        if isinstance(self.config, PAIConfig):
            out = self._without_image(kwargs, input_ids, real)
        else:
            out = {k: v for k, v in kwargs.items() if k not in CACHE_KEYS}
            out.update(self._noise(kwargs, reuse=not uses_cache))
            self.mask = real.long()
            out["attention_mask"] = self.mask
        if uses_cache:
            out["cache"] = self.cache
        return out

    def _without_image(self, kwargs: dict, input_ids: torch.Tensor, real: torch.Tensor) -> dict:
        """The batch's prompts with every image placeholder removed, left-padded again."""
        keep = real & ~self.adapter.placeholder_mask(self.model, input_ids)  # (B, T)
        length = int(keep.sum(-1).max())
        # stable sort: kept tokens last, in order -> the rows left-padded to ``length``
        order = torch.argsort(keep.to(torch.int8), dim=1, stable=True)[:, -length:]
        self.mask = keep.gather(1, order).long()  # (B, length)
        out = {"input_ids": input_ids.gather(1, order).masked_fill(self.mask == 0, _pad_id(self.model)),
               "attention_mask": self.mask}
        for key in TOKEN_ALIGNED_KEYS:
            if isinstance(kwargs.get(key), torch.Tensor) and kwargs[key].shape == input_ids.shape:
                out[key] = kwargs[key].gather(1, order).masked_fill(self.mask == 0, 0)
        out.update({k: kwargs[k] for k in TEXT_ONLY_KEYS if k in kwargs})
        text_positions = (self.mask.cumsum(-1) - 1).masked_fill(self.mask == 0, 0)  # as generate builds them
        self.positions = text_positions[:, -1:]
        if kwargs.get("position_ids") is not None:
            out["position_ids"] = _like(text_positions, kwargs["position_ids"])
        return out

    def _decode_inputs(self, kwargs: dict) -> dict:
        if self.mask is None:
            raise RuntimeError("vasink saw a decode step before any prompt; enable the method before generating")
        input_ids = kwargs["input_ids"]
        new = input_ids.shape[1]
        main_mask = kwargs.get("attention_mask")
        new_mask = main_mask[:, -new:] if isinstance(main_mask, torch.Tensor) and main_mask.dim() == 2 \
            else torch.ones_like(input_ids)
        self.mask = torch.cat([self.mask, new_mask.to(self.mask.dtype)], dim=1)
        if isinstance(self.config, PAIConfig):
            out = {"input_ids": input_ids, "attention_mask": self.mask}
            out.update({k: kwargs[k] for k in (*TOKEN_ALIGNED_KEYS, *TEXT_ONLY_KEYS) if k in kwargs})
            steps = torch.arange(1, new + 1, device=input_ids.device)
            text_positions = self.positions + steps[None, :]  # generate's rule: last position + 1
            self.positions = text_positions[:, -1:]
            if kwargs.get("position_ids") is not None:
                out["position_ids"] = _like(text_positions, kwargs["position_ids"])
        else:  # the same tokens at the same positions: the main call's inputs over this pass's cache
            out = {k: v for k, v in kwargs.items() if k not in CACHE_KEYS}
            out["attention_mask"] = self.mask
        out["cache"] = self.cache
        return out

    def _noise(self, kwargs: dict, reuse: bool) -> dict:
        """The main call's floating pixel tensors (images and videos), noised (``noise.noised_batch_pixels``: with
        a seed, each image's noise from (seed, its pixels); without, fresh noise from torch's global generator per
        prompt). With ``reuse`` (a forward without cache, the next step of a generation) the same tensor keeps its
        noise."""
        out = {}
        for key, pixels in kwargs.items():
            if not (key.startswith("pixel_values") and isinstance(pixels, torch.Tensor) and pixels.is_floating_point()):
                continue
            previous = self.noised.get(key)
            if not reuse or previous is None or previous[0] is not pixels:
                grid = kwargs.get(GRID_KEYS.get(key, ""))
                sizes = kwargs.get("image_sizes") if key == "pixel_values" else None
                previous = (pixels, noised_batch_pixels(pixels, self.config.noise_step, self.config.seed, grid, sizes))
                self.noised[key] = previous
            out[key] = previous[1]
        if not out:
            raise ValueError("VCD noises the image's pixels: the prompt's forward got no pixel_values (pass the "
                             "processor's pixel_values, not mm_encoder_outputs)")
        return out


def _paired(kwargs: dict, noised: dict) -> dict:
    """The model call's keyword arguments with 2B rows: every batch tensor followed by itself (the pixels by their
    noised copy; images, grids and sizes stay in row order); positions along their batch dim (-2: (B, T) and
    Qwen-VL's (k, B, T)); the 4D masks generate builds for a static cache (one, or one per layer type), except
    those that broadcast over the batch; the cache, cache positions and scalars as they are."""
    out = {}
    for key, value in kwargs.items():
        if key in noised:
            out[key] = torch.cat([value, noised[key]])
        elif key == "attention_mask" and isinstance(value, dict):
            out[key] = {kind: _paired_mask(mask) for kind, mask in value.items()}
        elif key == "attention_mask" and value is not None:
            out[key] = _paired_mask(value)
        elif not isinstance(value, torch.Tensor) or value.dim() == 0 or key in (*CACHE_KEYS, "cache_position"):
            out[key] = value
        elif key == "position_ids" and value.dim() >= 2:
            out[key] = torch.cat([value, value], dim=-2)
        else:
            out[key] = torch.cat([value, value])
    return out


def _paired_mask(mask):
    if mask is None:
        return mask
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"VCD's paired forward takes attention masks as tensors, got {type(mask).__name__}; "
                        f"load the model with attn_implementation='sdpa' or 'eager'")
    if mask.dim() == 4 and mask.shape[0] == 1:  # (1, 1, Q, K): the same for every row
        return mask
    return torch.cat([mask, mask])


def _like(text_positions: torch.Tensor, main_positions: torch.Tensor) -> torch.Tensor:
    """(B, T) text positions shaped as the main call's position ids ((B, T) or (k, B, T) for multimodal RoPE:
    without an image, every row of those is the text position)."""
    lead = main_positions.shape[:-2]
    return text_positions.to(main_positions.dtype).expand(*lead, *text_positions.shape).contiguous()


def _pad_id(model: nn.Module) -> int:
    pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else 0
