"""Discover the sink dimensions of a model not in the known table (docs/method.md#known-sink-dimensions).

Calibration prompts are run one at a time; for every decoder layer >= 2 the first text token's
``|x[d]| / RMS(x)`` is recorded per dimension (the BOS-like token: the first token that is not an image
placeholder, so PaliGemma's ``[image tokens] <bos> prefix`` is read at its ``<bos>``). Dimensions that are
massive (above ``min_ratio``) in at least ``min_fraction`` of the (prompt, layer) pairs are the sink
dimensions. The evidence is kept so the user can check the choice, and a tau is suggested from the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from .api import model_as_loaded
from .config import FIRST_SEARCHED_LAYER
from .models import adapter_for
from .sinks import dimension_ratios, sink_dimension_value

UPPER_ORDINARY_QUANTILE = 0.75  # the ordinary tokens' level that a suggested tau must clear (_suggest_tau)

DEFAULT_PROMPTS = (
    "Describe the image.",
    "What is in the picture?",
    "Is there a person in the image?",
    "What colour is the largest object?",
)


@dataclass
class SinkDims:
    """Discovered sink dimensions and the evidence behind them."""

    dims: tuple[int, ...]
    first_token_ratio: torch.Tensor  # (prompts, layers, hidden): |x[d]| / RMS(x) of the first text token
    median_token_ratio: torch.Tensor  # (prompts, layers, hidden): median over the other tokens
    searched_layers: tuple[int, ...]
    min_ratio: float
    frequency: torch.Tensor  # (hidden,): share of (prompt, searched layer) pairs where the dim is massive
    first_token_phi: torch.Tensor  # (prompts, layers) phi of the first token on ``dims``
    median_token_phi: torch.Tensor  # (prompts, layers) median phi of the other tokens on ``dims``
    suggested_tau: float

    def __iter__(self):
        return iter(self.dims)

    def summary(self) -> str:
        if not self.dims:
            best = int(self.frequency.argmax())
            return (f"no sink dimension found: no hidden dimension is massive (|x_d|/RMS >= {self.min_ratio:.1f}) on "
                    f"the first token in at least half of the (prompt, layer) pairs (the closest, dim {best}, in "
                    f"{100 * float(self.frequency[best]):.0f}%). This model shows no massive activation, so VAR has no "
                    "sink to take attention from; there is no tau to suggest (docs/method.md#sink-dimensions-and-phi)")
        rows = [f"sink dims {list(self.dims)} (massive = |x_d|/RMS >= {self.min_ratio:.1f}), "
                f"suggested tau {self.suggested_tau:.2f}"]
        for d in self.dims:
            rows.append(f"  dim {d}: massive in {100 * float(self.frequency[d]):.0f}% of (prompt, layer) pairs")
        layers = self.searched_layers
        bos = self.first_token_phi[:, list(layers)].median(0).values
        med = self.median_token_phi[:, list(layers)].median(0).values
        for layer, b, m in zip(layers, bos.tolist(), med.tolist()):
            rows.append(f"  layer {layer:>3}: first-token phi {b:7.2f}   median-token phi {m:6.2f}")
        return "\n".join(rows)


def calibration_images(size: int = 336) -> list[Image.Image]:
    """A few synthetic images (no download): flat, gradient, shapes on a plain background, noise."""
    rng = np.random.default_rng(0)
    flat = Image.new("RGB", (size, size), (200, 200, 200))
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    gradient = Image.fromarray(np.stack([np.tile(ramp, (size, 1))] * 3, axis=-1))
    shapes = Image.new("RGB", (size, size), (230, 230, 220))
    draw = ImageDraw.Draw(shapes)
    draw.ellipse((size // 8, size // 8, size // 2, size // 2), fill=(200, 40, 40))
    draw.rectangle((size // 2, size // 2, 7 * size // 8, 7 * size // 8), fill=(40, 60, 200))
    noise = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return [flat, gradient, shapes, noise]


def build_prompt_inputs(processor, image: Image.Image, prompt: str):
    """Inputs for one image + prompt through the processor's chat template (its own image tokens)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    if getattr(processor, "chat_template", None):
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
    else:
        text = f"{processor.image_token}\n{prompt}"
    return processor(images=image, text=text, return_tensors="pt")


@torch.no_grad()
def find_sink_dims(model: nn.Module, processor, prompts=None, images=None, *, min_ratio: float | None = None,
                   min_fraction: float = 0.5, max_dims: int = 4) -> SinkDims:
    """Find the hidden dimensions that carry massive activations on the first text (BOS-like) token across layers
    and prompts."""
    adapter = adapter_for(model)
    hidden_size = adapter.text_config(model).hidden_size
    layers = adapter.decoder_layers(model)
    num_layers = len(layers)
    searched = tuple(range(min(FIRST_SEARCHED_LAYER, num_layers - 1), num_layers))
    prompts = list(prompts) if prompts is not None else list(DEFAULT_PROMPTS)
    images = list(images) if images is not None else calibration_images()
    if not prompts or not images:
        raise ValueError("find_sink_dims needs at least one prompt and one image")
    # Random vectors have max |x_d|/RMS near 3; massive means a large share of sqrt(hidden), the ceiling of phi.
    min_ratio = min_ratio if min_ratio is not None else max(4.5, 0.25 * math.sqrt(hidden_size))

    captured: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, kwargs, i=i: captured.__setitem__(i, (args[0] if args else kwargs["hidden_states"])[0]),
        with_kwargs=True) for i, layer in enumerate(layers)]
    first, median, hidden_by_prompt, text_by_prompt = [], [], [], []
    device = next(model.parameters()).device
    with model_as_loaded(model):  # the model's own activations, whatever method is on
        try:
            for index, prompt in enumerate(prompts):
                inputs = build_prompt_inputs(processor, images[index % len(images)], prompt).to(device)
                captured.clear()
                model(**inputs)
                hidden = torch.stack([captured[i].float() for i in range(num_layers)])  # (L, T, D)
                ratios = dimension_ratios(hidden)  # (L, T, D)
                text = text_token_mask(model, adapter, inputs).to(ratios.device)  # (T,)
                bos = int(text.nonzero()[0])
                others = torch.arange(ratios.shape[1], device=ratios.device) != bos  # (T,)
                text_by_prompt.append(hidden[:, others & text].to("cpu", torch.bfloat16))  # for the suggested tau
                first.append(ratios[:, bos])
                median.append(ratios[:, others].median(dim=1).values if others.any() else torch.zeros_like(ratios[:, 0]))
                hidden_by_prompt.append(hidden[:, others].to("cpu", torch.bfloat16))  # for median_phi: off the GPU
        finally:
            for hook in hooks:
                hook.remove()

    first_ratio, median_ratio = torch.stack(first).cpu(), torch.stack(median).cpu()  # (P, L, D)
    massive = first_ratio[:, list(searched)] >= min_ratio  # (P, Ls, D)
    frequency = massive.float().mean(dim=(0, 1))  # (D,)
    ranked = torch.argsort(frequency, descending=True)[:max_dims]
    dims = tuple(sorted(int(d) for d in ranked if frequency[d] >= min_fraction))

    if dims:
        first_phi = first_ratio[:, :, list(dims)].amax(-1)  # (P, L): phi of the first token, exactly
        median_phi = torch.stack([sink_dimension_value(h, dims).median(-1).values for h in hidden_by_prompt])
        text_phi = [sink_dimension_value(h, dims).float() for h in text_by_prompt if h.shape[1]]  # (L, text tokens)
        upper_phi = torch.stack([phi.quantile(UPPER_ORDINARY_QUANTILE, dim=-1) for phi in text_phi]) if text_phi \
            else median_phi  # (P, L)
        suggested = _suggest_tau(first_phi[:, list(searched)], upper_phi[:, list(searched)])
    else:
        first_phi = median_phi = torch.zeros(len(prompts), num_layers)
        suggested = float("nan")
    return SinkDims(dims, first_ratio, median_ratio, searched, float(min_ratio), frequency,
                    first_phi, median_phi, suggested)


def first_text_token(model: nn.Module, adapter, inputs) -> int:
    """Position of the prompt's first token that is not an image placeholder: the BOS-like token (the first token
    for LLaVA-style prompts, the one after the image for PaliGemma's ``[image tokens] <bos> prefix``)."""
    return int(text_token_mask(model, adapter, inputs).nonzero()[0])


def text_token_mask(model: nn.Module, adapter, inputs) -> torch.Tensor:
    """(T,) bool: the first prompt's real tokens that are not image placeholders."""
    input_ids = inputs["input_ids"]
    extra = {k: v for k, v in dict(inputs).items() if k != "input_ids"}
    placeholder = adapter.placeholder_mask(model, input_ids, **extra) | adapter.visual_mask(model, input_ids, **extra)
    text = ~placeholder[0]
    if "attention_mask" in extra:
        text &= extra["attention_mask"][0].bool()
    if not text.any():
        raise ValueError("find_sink_dims: a calibration prompt has no text token (every token is an image placeholder)")
    return text


def _suggest_tau(first_phi: torch.Tensor, upper_phi: torch.Tensor) -> float:
    """Geometric middle between a low first-token phi and a high ordinary-token phi over the searched layers:
    the 10th percentile of the first token's phi, and the 90th percentile (over prompts and layers) of the
    upper quartile of the other *text* tokens. Text only: the visual tokens are where sinks are looked for,
    and their number and level (64 to thousands per image, low or high on the sink dims depending on the
    projector) must not move the threshold. The upper quartile, not the median, because ordinary tokens can
    sit high on a sink dim (SmolLM2-135M: text tokens' median 10-14 on dim 507, upper quartile up to 17,
    BOS 20-24)."""
    low_sink = float(torch.quantile(first_phi.flatten(), 0.1))
    high_ordinary = float(torch.quantile(upper_phi.flatten(), 0.9))
    return math.sqrt(max(low_sink, 1e-6) * max(high_ordinary, 1e-6))
