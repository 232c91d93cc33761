"""Qwen2-VL and Qwen2.5-VL: dynamic-resolution grids with 2x2 merging, images and video, M-RoPE.

Each image (video) is ``t x (h / merge) x (w / merge)`` placeholder tokens, ``t`` = 1 for an image and
the number of temporal patch groups for a video, between ``<|vision_start|>`` and ``<|vision_end|>``
(text tokens, not visual). ``image_grid_thw`` / ``video_grid_thw`` give each one's grid in token order.
M-RoPE's 3-row position ids do not concern vasink: its hooks read only input_ids and hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import ImageGrid, ModelAdapter, register_adapter, sort_grids, split_inputs, split_spans


@dataclass(frozen=True)
class QwenVLAdapter(ModelAdapter):
    def merge_size(self, model: nn.Module) -> int:
        return int(model.config.vision_config.spatial_merge_size)

    def image_grids(self, model: nn.Module, inputs) -> list[list[ImageGrid]]:
        """Per batch row: one grid per image, one per temporal slice of a video, in token order."""
        input_ids, extra = split_inputs(inputs)
        merge = self.merge_size(model)
        per_row: list[list] = [[] for _ in range(input_ids.shape[0])]
        for token_attr, grid_key in (("image_token_id", "image_grid_thw"), ("video_token_id", "video_grid_thw")):
            tokens = input_ids == getattr(model.config, token_attr)
            if not bool(tokens.any()):
                continue
            grid_thw = extra.get(grid_key)
            if grid_thw is None:
                raise ValueError(f"{type(model).__name__} needs {grid_key} (from the processor) to lay out its grids")
            sizes = [int(t) * (int(h) // merge) * (int(w) // merge) for t, h, w in grid_thw.tolist()]
            for (t, h, w), (row, positions) in zip(grid_thw.tolist(), split_spans(tokens, sizes, grid_key)):
                rows, cols = int(h) // merge, int(w) // merge
                for frame in positions.split(rows * cols):
                    per_row[row].append((int(frame[0]), ImageGrid(rows, cols, frame)))
        return sort_grids(per_row)


QWEN2_VL = register_adapter(
    QwenVLAdapter(
        name="qwen2-vl",
        model_classes=("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id", "video_token_id"),
    )
)
