"""Model-family adapters: where the text decoder is and which tokens are visual.

Usage::

    from vasink.models import ModelAdapter, register_adapter

    register_adapter(ModelAdapter(
        name="my-vlm",
        model_classes=("MyVLMForConditionalGeneration",),
        text_config_key="text_config",
        decoder_layers_path="model.language_model.layers",
        visual_token_id_attrs=("image_token_id",),
    ))

An adapter is matched on the class name of the model passed to ``vasink.enable``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
from torch import nn

_ADAPTERS: dict[str, "ModelAdapter"] = {}


class UnsupportedModelError(ValueError):
    """The model's class has no registered adapter."""


@dataclass(frozen=True)
class ModelAdapter:
    name: str  # family name shown to users
    model_classes: tuple[str, ...]  # transformers class names this adapter handles
    text_config_key: str  # sub-config of the text backbone, as set_attn_implementation takes it
    decoder_layers_path: str  # dotted attribute path from the model to its decoder layers (nn.ModuleList)
    visual_token_id_attrs: tuple[str, ...]  # config attributes holding visual placeholder token ids

    def text_config(self, model: nn.Module):
        return getattr(model.config, self.text_config_key)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        module = model
        for part in self.decoder_layers_path.split("."):
            module = getattr(module, part)
        return module

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [layer.self_attn for layer in self.decoder_layers(model)]

    def visual_token_ids(self, model: nn.Module) -> tuple[int, ...]:
        ids = [getattr(model.config, attr, None) for attr in self.visual_token_id_attrs]
        return tuple(int(i) for i in ids if i is not None)

    def visual_mask(self, model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool ``[batch, tokens]``: True at image (and video) placeholder tokens."""
        ids = torch.tensor(self.visual_token_ids(model), device=input_ids.device)
        return torch.isin(input_ids, ids)


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    for cls_name in adapter.model_classes:
        _ADAPTERS[cls_name] = adapter
    return adapter


def supported_model_classes() -> list[str]:
    return sorted(_ADAPTERS)


def adapter_for(model: nn.Module) -> ModelAdapter:
    cls_name = type(model).__name__
    if cls_name in _ADAPTERS:
        return _ADAPTERS[cls_name]
    close = difflib.get_close_matches(cls_name, _ADAPTERS, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise UnsupportedModelError(
        f"vasink has no adapter for {cls_name}.{hint} Supported classes: {', '.join(supported_model_classes())}. "
        "To add a family, register one with vasink.models.register_adapter(ModelAdapter(...)) "
        "(see the vasink.models docstring)."
    )


from . import llava  # noqa: E402,F401  (registers the built-in adapters)
