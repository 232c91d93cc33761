"""Mistral 3 / Pixtral (``Mistral3ForConditionalGeneration``): native-resolution grids with break tokens.

An image of ``H x W`` pixels is ``H / (patch * merge)`` rows of ``W / (patch * merge)`` ``[IMG]`` tokens;
each row ends with ``[IMG_BREAK]`` and the last with ``[IMG_END]`` (text tokens, not visual).
``image_sizes`` gives each image's grid in token order.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import ImageGrid, ModelAdapter, register_adapter, split_inputs, split_spans


@dataclass(frozen=True)
class Mistral3Adapter(ModelAdapter):
    def image_grids(self, model: nn.Module, inputs) -> list[list[ImageGrid]]:
        input_ids, extra = split_inputs(inputs)
        tokens = self.visual_mask(model, input_ids)
        per_row: list[list[ImageGrid]] = [[] for _ in range(input_ids.shape[0])]
        if not bool(tokens.any()):
            return per_row
        if extra.get("image_sizes") is None:
            raise ValueError(f"{type(model).__name__} needs image_sizes (from the processor) to lay out its grids")
        downsample = model.config.vision_config.patch_size * model.config.spatial_merge_size
        shapes = [(int(h) // downsample, int(w) // downsample) for h, w in extra["image_sizes"].tolist()]
        spans = split_spans(tokens, [rows * cols for rows, cols in shapes], "image_sizes")
        for (rows, cols), (row, positions) in zip(shapes, spans):
            per_row[row].append(ImageGrid(rows, cols, positions))
        return per_row


MISTRAL3 = register_adapter(
    Mistral3Adapter(
        name="mistral3",
        model_classes=("Mistral3ForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id",),
    )
)
