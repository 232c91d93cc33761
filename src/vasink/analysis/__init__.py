"""Analysis: the paper's findings measured on a model, as figures, tables and a self-contained report.

    from vasink.analysis import capture_forward, analyze_sinks, analyze_attention, analyze_heads, analyze_ablations

Each ``analyze_*`` call writes PNGs, ``numbers.json`` and ``report.html`` into a folder (the ``vasink sinks``,
``attention``, ``heads`` and ``ablate`` commands are thin wrappers). The ablation rules
(``vasink.analysis.ablations``) plug into ``vasink.enable(model, config, intervention=rule)``.
"""

from .ablations import ABLATIONS, mask_attention, mask_random_visual, mask_visual_sinks, redistribute_budget
from .attention_maps import image_grids, text_to_image_attention
from .capture import Capture, capture_forward
from .figures import attention_comparison_figure
from .heads import HeadMap, head_map
from .residual import residual_contributions
from .runs import analyze_ablations, analyze_attention, analyze_heads, analyze_sinks

__all__ = [
    "ABLATIONS",
    "Capture",
    "HeadMap",
    "analyze_ablations",
    "analyze_attention",
    "analyze_heads",
    "analyze_sinks",
    "attention_comparison_figure",
    "capture_forward",
    "head_map",
    "image_grids",
    "mask_attention",
    "mask_random_visual",
    "mask_visual_sinks",
    "redistribute_budget",
    "residual_contributions",
    "text_to_image_attention",
]
