"""Idefics3 and SmolVLM: an image split into rows x cols tiles plus a global view, each tile a square grid.

Each tile is ``<fake_token_around_image><row_r_col_c>`` then ``image_seq_len`` ``<image>`` tokens (the
tile's pixel-shuffled patches, square); the global view follows. The row/column and wrapper tokens are
text. SmolVLM's video frames are images with the same token.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import ModelAdapter, register_adapter


@dataclass(frozen=True)
class Idefics3Adapter(ModelAdapter):
    def tile_tokens(self, model: nn.Module) -> int:
        config = model.config
        per_side = config.vision_config.image_size // config.vision_config.patch_size
        return per_side * per_side // (config.scale_factor ** 2)


IDEFICS3 = register_adapter(
    Idefics3Adapter(
        name="idefics3",
        model_classes=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
        text_config_key="text_config",
        decoder_layers_path="model.text_model.layers",
        visual_token_id_attrs=("image_token_id",),
    )
)
