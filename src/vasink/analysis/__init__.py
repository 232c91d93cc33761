"""Analysis: attention maps over the image grid, sink-patch figures."""

from .attention_maps import image_grids, text_to_image_attention
from .figures import attention_comparison_figure

__all__ = ["image_grids", "text_to_image_attention", "attention_comparison_figure"]
