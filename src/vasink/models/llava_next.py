"""LLaVA-NeXT / LLaVA-1.6 (``LlavaNextForConditionalGeneration``): anyres tiles plus newline embeddings.

Each image's placeholder span is ``[base grid (side x side)] [high-res grid, rows x (cols + 1)]``: the
high-res grid is unpadded to the image's aspect ratio and every row ends with the learned
``image_newline`` embedding (a single image with no tiles is ``[base] [newline]``). The newline slots
are placeholders but not visual tokens: they are left out of V (and are not eligible queries).

The layout comes from the model's own ``pack_image_features`` run on marker features (1 on patches,
0 for the newline), so unpadding and (OneVision) downsampling follow the model exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import ImageGrid, ModelAdapter, register_adapter, sort_grids, split_inputs, split_spans


@dataclass
class SpanLayout:
    """One image's (or video's) placeholder span: which slots are patches, and its grids (local offsets)."""

    is_patch: torch.Tensor  # (span,) bool
    grids: list[tuple[int, int, torch.Tensor]]  # (rows, cols, offsets into the span) in token order


def packed_layout(packed: torch.Tensor, side: int) -> SpanLayout:
    """``packed``: one image's marker features (span,) after pack_image_features; ``side``: base grid side."""
    is_patch = packed > 0.5
    base = side * side
    grids = [(side, side, torch.arange(base))]
    rest = is_patch[base:]
    rows = int((~rest).sum())
    if len(rest) > 1:  # a high-res grid: rows x (cols + 1), a newline closing each row
        cols = len(rest) // rows - 1
        offsets = torch.arange(rows * (cols + 1)).reshape(rows, cols + 1)[:, :cols].flatten() + base
        grids.append((rows, cols, offsets))
    return SpanLayout(is_patch, grids)


def spans_to_mask(placeholder: torch.Tensor, span_tokens: torch.Tensor, layouts: list[SpanLayout],
                  what: str) -> torch.Tensor:
    """Write the spans' patch flags onto the positions of ``span_tokens`` (row-major = the model's order)."""
    flags = torch.cat([layout.is_patch for layout in layouts]) if layouts else torch.zeros(0, dtype=torch.bool)
    if flags.numel() != int(span_tokens.sum()):
        raise ValueError(f"the prompt has {int(span_tokens.sum())} {what} placeholder tokens but the {what} inputs "
                         f"make {flags.numel()}: pass the processor's inputs unchanged")
    visual = placeholder.clone()
    visual[span_tokens] = flags.to(visual.device)
    return visual


def spans_to_grids(span_tokens: torch.Tensor, layouts: list[SpanLayout]) -> list[list[tuple[int, int, torch.Tensor]]]:
    """Per batch row: (position in token order, grid) for every grid of every span in that row."""
    out: list[list] = [[] for _ in range(span_tokens.shape[0])]
    spans = split_spans(span_tokens, [len(layout.is_patch) for layout in layouts], "image_sizes")
    for layout, (row, positions) in zip(layouts, spans):
        for rows, cols, offsets in layout.grids:
            out[row].append((int(positions[offsets[0]]), ImageGrid(rows, cols, positions[offsets])))
    return out


@dataclass(frozen=True)
class LlavaNextAdapter(ModelAdapter):
    def base_side(self, model: nn.Module) -> int:
        vision = model.config.vision_config
        return vision.image_size // vision.patch_size

    def image_layouts(self, model: nn.Module, image_sizes, **inputs) -> list[SpanLayout]:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        side, config = self.base_side(model), model.config
        counts = [image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size)
                  for size in image_sizes]
        markers = [torch.ones(n, side * side, 1) for n in counts]
        strategy = inputs.get("vision_feature_select_strategy") or config.vision_feature_select_strategy
        packed, _ = _inner(model).pack_image_features(markers, image_sizes, strategy, image_newline=torch.zeros(1))
        return [packed_layout(p[:, 0], side) for p in packed]

    def _layouts(self, model, input_ids, inputs) -> list[tuple[torch.Tensor, list[SpanLayout], str]]:
        """(placeholder positions, span layouts, name) per kind of visual input present in the prompt."""
        image_tokens = input_ids == model.config.image_token_id
        if not bool(image_tokens.any()):
            return []
        encoded = (inputs.get("mm_encoder_outputs") or {}).get("image")
        if encoded is not None:  # generate() encodes the images first and passes the packed features
            newline = _inner(model).image_newline
            side = self.base_side(model)
            layouts = [packed_layout((~(f == newline.to(f)).all(-1)).float(), side) for f in encoded.pooler_output]
        elif inputs.get("image_sizes") is not None:
            layouts = self.image_layouts(model, **inputs)
        else:
            raise ValueError(f"{type(model).__name__} needs image_sizes (from the processor) to place its tokens")
        return [(image_tokens, layouts, "image")]

    def visual_mask(self, model: nn.Module, input_ids: torch.Tensor, **inputs) -> torch.Tensor:
        visual = self.placeholder_mask(model, input_ids)
        for span_tokens, layouts, what in self._layouts(model, input_ids, inputs):
            visual = spans_to_mask(visual, span_tokens, layouts, what)
        return visual

    def image_grids(self, model: nn.Module, inputs) -> list[list[ImageGrid]]:
        """Per batch row: each image's base grid then its unpadded high-res grid (newlines excluded)."""
        input_ids, extra = split_inputs(inputs)
        per_row: list[list] = [[] for _ in range(input_ids.shape[0])]
        for span_tokens, layouts, _ in self._layouts(model, input_ids, extra):
            for row, entries in enumerate(spans_to_grids(span_tokens, layouts)):
                per_row[row].extend(entries)
        return sort_grids(per_row)


def _inner(model: nn.Module) -> nn.Module:
    """The base model (``model.model`` of a ...ForConditionalGeneration, else the model itself)."""
    return model.model if hasattr(model, "lm_head") else model


LLAVA_NEXT = register_adapter(
    LlavaNextAdapter(
        name="llava-next",
        model_classes=("LlavaNextForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id",),
    )
)
