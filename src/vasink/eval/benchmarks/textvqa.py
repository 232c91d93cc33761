"""TextVQA (Singh et al., 2019): questions about text in images, VQA accuracy.

Hub: ``lmms-lab/textvqa`` (split ``validation``; columns image_id, question_id, question, question_tokens,
image, image_width, image_height, flickr_original_url, flickr_300k_url, answers, image_classes, set_name,
ocr_tokens). Local: LLaVA's question JSONL with an ``answers`` list.
"""

from __future__ import annotations

from ..registry import Benchmark, register
from .pope import SHORT_ANSWER
from .vqav2 import VqaScoring


@register("textvqa")
class TextVQA(VqaScoring, Benchmark):
    description = "TextVQA val, VQA accuracy"
    default_data = "lmms-lab/textvqa"
    default_split = "validation"
    prompt_suffix = SHORT_ANSWER
    max_new_tokens = 128
