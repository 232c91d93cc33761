"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): anyres images and pooled video frames.

Images as in LLaVA-NeXT (base grid, then the unpadded high-res grid with a newline per row; the
high-res grid is downsampled past ``anyres_max_N`` tiles; a prompt with several images gets no tiles).
A video is ``frames x (ceil(side/2) x ceil(side/2))`` pooled patches and one newline at its end; video
tokens are visual, the newline is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import register_adapter
from .llava_next import LlavaNextAdapter, SpanLayout, _inner, packed_layout


@dataclass(frozen=True)
class LlavaOnevisionAdapter(LlavaNextAdapter):
    def image_layouts(self, model: nn.Module, image_sizes, **inputs) -> list[SpanLayout]:
        from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

        side, config = self.base_side(model), model.config
        batch_num_images = inputs.get("batch_num_images")
        # Same rule as the model: a prompt with several images gets no anyres tiles.
        if batch_num_images is None:
            patched = [True] * len(image_sizes)
        else:
            patched = [int(n) == 1 for n in batch_num_images for _ in range(int(n))]
        counts = [image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size)
                  if tiles else 1 for size, tiles in zip(image_sizes, patched)]
        markers = [torch.ones(n, side * side, 1) for n in counts]
        aspect = inputs.get("vision_aspect_ratio") or config.vision_aspect_ratio
        packed, _ = _inner(model).pack_image_features(markers, image_sizes, image_newline=torch.zeros(1),
                                                      vision_aspect_ratio=aspect)
        return [packed_layout(p[:, 0], side) for p in packed]

    def video_layouts(self, model: nn.Module, num_videos: int, frames: int) -> list[SpanLayout]:
        pooled = math.ceil(self.base_side(model) / 2)  # apply_pooling: bilinear to ceil(side / 2)
        per_frame = pooled * pooled
        is_patch = torch.ones(frames * per_frame + 1, dtype=torch.bool)
        is_patch[-1] = False  # the newline closing the video
        grids = [(pooled, pooled, torch.arange(per_frame) + f * per_frame) for f in range(frames)]
        return [SpanLayout(is_patch, grids) for _ in range(num_videos)]

    def _layouts(self, model, input_ids, inputs):
        layouts = super()._layouts(model, input_ids, inputs)
        video_tokens = input_ids == model.config.video_token_id
        if bool(video_tokens.any()):
            encoded = (inputs.get("mm_encoder_outputs") or {}).get("video")
            if encoded is not None:  # (videos, frames * per_frame + 1, hidden) from generate()'s pre-encoding
                num_videos, span = encoded.pooler_output.shape[:2]
                frames = (span - 1) // math.ceil(self.base_side(model) / 2) ** 2
            elif inputs.get("pixel_values_videos") is not None:
                num_videos, frames = inputs["pixel_values_videos"].shape[:2]
            else:
                raise ValueError(f"{type(model).__name__} needs pixel_values_videos to place its video tokens")
            layouts.append((video_tokens, self.video_layouts(model, num_videos, frames), "video"))
        return layouts


LLAVA_ONEVISION = register_adapter(
    LlavaOnevisionAdapter(
        name="llava-onevision",
        model_classes=("LlavaOnevisionForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id", "video_token_id"),
    )
)
