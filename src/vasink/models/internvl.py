"""InternVL (transformers-native ``InternVLForConditionalGeneration``: InternVL2.5 / InternVL3 "-hf").

An image is split into square tiles (plus a thumbnail) and every tile gives the same number of
``<IMG_CONTEXT>`` tokens, ``(image_size / patch)^2 * downsample_ratio^2``; all tiles of one image sit in
one block between ``<img>`` and ``</img>``. Video frames are images (one tile each) with the same token.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import ModelAdapter, register_adapter


@dataclass(frozen=True)
class InternVLAdapter(ModelAdapter):
    def tile_tokens(self, model: nn.Module) -> int:
        vision, ratio = model.config.vision_config, model.config.downsample_ratio
        per_side = vision.image_size[0] // vision.patch_size[0]
        return int(per_side * per_side * ratio * ratio)


INTERNVL = register_adapter(
    InternVLAdapter(
        name="internvl",
        model_classes=("InternVLForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id",),
    )
)
