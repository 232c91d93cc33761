"""Qwen3-VL (``Qwen3VLForConditionalGeneration``): Qwen2-VL's grids, video frames with timestamps, DeepStack.

Video frames are separated by timestamp text (``<t seconds>``, not visual); each temporal slice is
``(h / merge) x (w / merge)`` video tokens. DeepStack adds vision features to the visual positions of the
first decoder layers' outputs: the sinks of a layer are still read on the hidden states entering it.
"""

from __future__ import annotations

from . import register_adapter
from .qwen2_vl import QwenVLAdapter

QWEN3_VL = register_adapter(
    QwenVLAdapter(
        name="qwen3-vl",
        model_classes=("Qwen3VLForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id", "video_token_id"),
    )
)
