"""PaliGemma (``PaliGemmaForConditionalGeneration``): image tokens first, then a prefix-LM prompt.

The prompt is ``[image tokens] <bos> prefix \\n``: the prefix (image and prompt) attends bidirectionally,
generated tokens causally (``token_type_ids``); vasink keeps that mask. Eligible queries are the text
tokens after the image, as everywhere. Each image is ``(image_size / patch)^2`` tokens, square.
"""

from __future__ import annotations

from . import ModelAdapter, register_adapter

PALIGEMMA = register_adapter(
    ModelAdapter(
        name="paligemma",
        model_classes=("PaliGemmaForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id",),
        tile_tokens_attr="text_config.num_image_tokens",
    )
)
