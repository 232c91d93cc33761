"""Gemma 3 (``Gemma3ForConditionalGeneration``): 256 pooled tokens per image (16 x 16), sliding-window layers.

Image tokens sit between ``<start_of_image>`` and ``<end_of_image>`` (text). The mask lets image tokens
attend to each other bidirectionally (``token_type_ids``) and five of every six layers use a sliding
window; vasink builds both masks with transformers' own mask functions (SDPA-style), so the window and
the image blocks are kept, and only text queries after the image are ever modified.
"""

from __future__ import annotations

from . import ModelAdapter, register_adapter

GEMMA3 = register_adapter(
    ModelAdapter(
        name="gemma3",
        model_classes=("Gemma3ForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id",),
        tile_tokens_attr="mm_tokens_per_image",
    )
)
