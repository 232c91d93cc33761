"""Model-family adapters: where the text decoder is, which tokens are visual, how images lie on a grid.

An adapter is matched on the class name of the model passed to ``vasink.enable`` (``type(model).__name__``).
Built in: LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL (the
transformers-native class), Idefics3 / SmolVLM, Gemma 3, Mistral 3 (Pixtral vision), PaliGemma; see
:func:`supported_model_classes`.

Registering a model vasink does not know, e.g. a VILA-style checkpoint loaded with ``trust_remote_code``
(a transformers LLM under ``model.llm``, one ``<image>`` placeholder id per visual patch, square grid)::

    from vasink.models import ModelAdapter, register_adapter

    class VilaAdapter(ModelAdapter):
        def text_config(self, model):                      # the LLM is a submodule with its own config
            return model.llm.config

        def set_text_attention(self, model, implementation):
            model.llm.set_attn_implementation(implementation)

    register_adapter(VilaAdapter(
        name="vila",
        model_classes=("VILAForCausalLM",),         # type(model).__name__ of the loaded model
        text_config_key="llm_cfg",                  # unused by this subclass (the two methods above)
        decoder_layers_path="llm.model.layers",     # dotted path from the model to its decoder layers
        visual_token_id_attrs=("image_token_id",),  # config attributes holding the visual placeholder ids
        tile_tokens_attr=None,                      # tokens per tile when tiles are adjacent (None: one block)
    ))

The contract: the ``input_ids`` the model is called with hold one placeholder id per visual token, at the
positions the decoder sees, and the decoder's attention modules call the attention function through
transformers' ``ALL_ATTENTION_FUNCTIONS`` seam with the text config's ``_attn_implementation`` and carry
``layer_idx`` (every native transformers decoder does). Remote code that builds ``inputs_embeds`` itself,
expanding one media token into many embeddings inside ``forward`` (NVILA's released ``VILAForCausalLM``
does), breaks the first part: vasink then raises at the first decoder layer instead of running VAR on the
wrong tokens, and such a model needs its placeholders expanded in ``input_ids`` before the call.

When the visual tokens are not simply "every placeholder token" (newline embeddings inside the image
span, as in LLaVA-NeXT) or the grids need the image sizes, subclass :class:`ModelAdapter` and override
:meth:`ModelAdapter.visual_mask` / :meth:`ModelAdapter.image_grids`; the family files in this package are
short examples.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

_ADAPTERS: dict[str, "ModelAdapter"] = {}


class UnsupportedModelError(ValueError):
    """The model's class has no registered adapter."""


class ImageGrid(NamedTuple):
    """One image (or tile, or video frame) laid out on its token grid: ``rows, cols, positions = grid``."""

    rows: int
    cols: int
    positions: torch.Tensor  # (rows * cols,) token positions in raster order


@dataclass(frozen=True)
class ModelAdapter:
    name: str  # family name shown to users
    model_classes: tuple[str, ...]  # transformers class names this adapter handles
    text_config_key: str  # sub-config of the text backbone, as set_attn_implementation takes it
    decoder_layers_path: str  # dotted attribute path from the model to its decoder layers (nn.ModuleList)
    visual_token_id_attrs: tuple[str, ...]  # config attributes holding visual placeholder token ids (image, video)
    tile_tokens_attr: str | None = None  # dotted config path: tokens per square tile when tiles are adjacent

    def text_config(self, model: nn.Module):
        return getattr(model.config, self.text_config_key)

    def set_text_attention(self, model: nn.Module, implementation: str) -> None:
        """Switch only the text backbone's attention implementation (the vision tower keeps its own)."""
        model.set_attn_implementation({self.text_config_key: implementation})

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return _get_path(model, self.decoder_layers_path)

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [layer.self_attn for layer in self.decoder_layers(model)]

    def visual_token_ids(self, model: nn.Module) -> tuple[int, ...]:
        ids = [getattr(model.config, attr, None) for attr in self.visual_token_id_attrs]
        return tuple(int(i) for i in ids if i is not None)

    def placeholder_mask(self, model: nn.Module, input_ids: torch.Tensor, **inputs) -> torch.Tensor:
        """Bool ``[batch, tokens]``: every token the vision features replace (images and video).

        Eligible queries are the tokens after the first placeholder that are not placeholders.
        """
        ids = torch.tensor(self.visual_token_ids(model), device=input_ids.device)
        return torch.isin(input_ids, ids)

    def visual_mask(self, model: nn.Module, input_ids: torch.Tensor, **inputs) -> torch.Tensor:
        """Bool ``[batch, tokens]``: the visual tokens V (image and video patches; no newline embeddings).

        ``inputs``: the model's other keyword inputs (image sizes, grids) for families that need them.
        """
        return self.placeholder_mask(model, input_ids, **inputs)

    def tile_tokens(self, model: nn.Module) -> int | None:
        """Tokens per square tile when several tiles are adjacent in one block; None: one block, one image."""
        return int(_get_path(model.config, self.tile_tokens_attr)) if self.tile_tokens_attr else None

    def image_grids(self, model: nn.Module, inputs) -> list[list[ImageGrid]]:
        """Per batch row, per image / tile / frame in token order: its grid of visual tokens.

        Default: each contiguous run of visual tokens is split into tiles of :meth:`tile_tokens` tokens
        (or is one tile), and each tile is a square grid in raster order.
        """
        input_ids, extra = split_inputs(inputs)
        visual = self.visual_mask(model, input_ids, **extra)
        tile = self.tile_tokens(model)
        grids = []
        for row in visual:
            per_image = []
            for block in contiguous_runs(row.nonzero().flatten()):
                size = tile or len(block)
                if len(block) % size:
                    raise ValueError(f"an image block of {len(block)} tokens is not whole {size}-token tiles")
                for tile_positions in block.split(size):
                    per_image.append(square_grid(tile_positions))
            grids.append(per_image)
        return grids


def split_spans(token_mask: torch.Tensor, sizes: list[int], what: str) -> list[tuple[int, torch.Tensor]]:
    """The positions of ``token_mask`` (B, T), in the model's (row-major) order, cut into consecutive spans of
    ``sizes`` tokens (one per image / video): ``[(batch row, positions)]``. ``what`` names the sizes' source."""
    where = token_mask.nonzero()  # (N, 2): (batch row, position)
    if sum(sizes) != len(where):
        raise ValueError(f"{what} make {sum(sizes)} visual tokens but the prompt has {len(where)}: "
                         "pass the processor's inputs unchanged")
    spans, start = [], 0
    for size in sizes:
        span = where[start:start + size]
        start += size
        row = int(span[0, 0])
        if int(span[-1, 0]) != row:
            raise ValueError(f"{what}: one image's {size} tokens fall in two prompts of the batch")
        spans.append((row, span[:, 1]))
    return spans


def sort_grids(per_row: list[list]) -> list[list[ImageGrid]]:
    """Per batch row, (position, grid) entries -> the grids in token order."""
    return [[grid for _, grid in sorted(entries, key=lambda e: e[0])] for entries in per_row]


def split_inputs(inputs) -> tuple[torch.Tensor, dict]:
    """``inputs`` as the model takes them (dict / BatchFeature) or a bare ``input_ids`` tensor."""
    if isinstance(inputs, torch.Tensor):
        return inputs, {}
    extra = {k: v for k, v in dict(inputs).items() if k != "input_ids"}
    return inputs["input_ids"], extra


def contiguous_runs(positions: torch.Tensor) -> list[torch.Tensor]:
    """Sorted 1-D positions -> list of runs of consecutive positions."""
    if len(positions) == 0:
        return []
    breaks = (positions[1:] - positions[:-1] != 1).nonzero().flatten() + 1
    return list(torch.tensor_split(positions, breaks.tolist()))


def square_grid(positions: torch.Tensor) -> ImageGrid:
    side = math.isqrt(len(positions))
    if side * side != len(positions):
        raise ValueError(f"an image tile of {len(positions)} tokens is not a square grid")
    return ImageGrid(side, side, positions)


def _get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    for cls_name in adapter.model_classes:
        _ADAPTERS[cls_name] = adapter
    return adapter


def supported_model_classes() -> list[str]:
    return sorted(_ADAPTERS)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter registered for the model's class, or for the nearest base class (a user's subclass)."""
    cls_name = type(model).__name__
    for cls in type(model).__mro__:
        if cls.__name__ in _ADAPTERS:
            return _ADAPTERS[cls.__name__]
    close = difflib.get_close_matches(cls_name, _ADAPTERS, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise UnsupportedModelError(
        f"vasink has no adapter for {cls_name}.{hint} Supported classes: {', '.join(supported_model_classes())}. "
        "To add a family, register one with vasink.models.register_adapter(ModelAdapter(name=..., "
        "model_classes=(...,), text_config_key=..., decoder_layers_path=..., visual_token_id_attrs=(...,))) "
        "(see the vasink.models docstring for an example)."
    )


# Registers the built-in adapters.
from . import (  # noqa: E402,F401
    gemma3,
    idefics3,
    internvl,
    llava,
    llava_next,
    llava_onevision,
    mistral3,
    paligemma,
    qwen2_vl,
    qwen3_vl,
)
