"""Text-to-image attention and sink masks laid out on the image's patch grid."""

from __future__ import annotations

import torch
from torch import nn

from ..api import var
from ..config import VARConfig
from ..models import ImageGrid, adapter_for
from .methods import attention_method


def image_grids(model: nn.Module, inputs) -> list[list[ImageGrid]]:
    """Per batch row, per image (tile, video frame): ``(rows, cols, positions)`` of its visual tokens.

    ``inputs``: the model's inputs (families with anyres tiles or dynamic grids need image sizes / grids
    besides ``input_ids``), or a bare ``input_ids`` tensor where that suffices (LLaVA-1.5). The layout is
    the model family's (:meth:`vasink.models.ModelAdapter.image_grids`); newline tokens are not in any grid.
    """
    return adapter_for(model).image_grids(model, inputs)


@torch.no_grad()
def text_to_image_attention(model: nn.Module, inputs, config: VARConfig, *, var_on: bool = False, method=None,
                            layers=None, heads=None, query: int = -1) -> torch.Tensor:
    """Attention of one query token to the first image's patches, ``(rows, cols)``, averaged over layers/heads.

    Uses the reference path (materialized weights) for one forward; ``var_on=False`` runs the same path
    with nothing moved (p = 0), so both maps come from the same computation. ``method``: ``"var"`` (the same as
    ``var_on=True``), ``"pai"``, ``"vaf"`` or a config of one of them: the attention with that method on, as
    its own attention path computes it (PAI without its guidance, which changes logits, not attention). VCD
    changes no attention and is refused (:func:`vasink.analysis.methods.attention_method`).
    """
    if var_on and method is not None:
        raise ValueError("pass var_on=True or method=..., not both (var_on=True is method='var')")
    if method is not None:
        run_config = attention_method(method, config)
    else:
        run_config = config.replace(implementation="reference",
                                    **({} if var_on else {"p": 0.0 if config.compat == "paper" else 1.0}))
    with var(model, run_config):
        out = model(**inputs, output_attentions=True)
    attentions = out.attentions  # tuple per layer of (B, H, Q, K)
    num_layers = len(attentions)
    layers = list(layers) if layers is not None else list(range(2, num_layers))
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {num_layers} decoder layers")
    stacked = torch.stack([attentions[layer][0] for layer in layers]).float()  # (L, H, Q, K)
    if heads is not None:
        bad = [h for h in heads if not 0 <= h < stacked.shape[1]]
        if bad:
            raise ValueError(f"heads {bad} out of range: the model has {stacked.shape[1]} heads")
        stacked = stacked[:, list(heads)]
    rows, cols, positions = image_grids(model, inputs)[0][0]
    row_weights = stacked[:, :, query].mean(dim=(0, 1))  # (K,)
    return row_weights[positions].reshape(rows, cols)
