"""LLaVA-1.5 (``LlavaForConditionalGeneration``): one image token per visual patch, fixed grid."""

from . import ModelAdapter, register_adapter

LLAVA = register_adapter(
    ModelAdapter(
        name="llava",
        model_classes=("LlavaForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id",),
    )
)

LLAVA_BASE = register_adapter(
    ModelAdapter(
        name="llava-base",
        model_classes=("LlavaModel",),
        text_config_key="text_config",
        decoder_layers_path="language_model.layers",
        visual_token_id_attrs=("image_token_id",),
    )
)
