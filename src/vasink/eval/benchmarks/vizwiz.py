"""VizWiz-VQA (Gurari et al., 2018): photos taken by blind people, many unanswerable; VQA accuracy.

Hub: ``lmms-lab/VizWiz-VQA`` (split ``val``; columns question_id, image, question, answers, category).
LLaVA's prompt asks for "Unanswerable" when the image does not tell.
"""

from __future__ import annotations

from ...scoring import evalai_answer
from ..registry import Benchmark, register
from .pope import SHORT_ANSWER
from .vqav2 import VqaScoring

UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'."


@register("vizwiz")
class VizWiz(VqaScoring, Benchmark):
    description = "VizWiz-VQA val, VQA accuracy"
    default_data = "lmms-lab/VizWiz-VQA"
    default_split = "val"
    prompt_suffix = UNANSWERABLE + SHORT_ANSWER
    max_new_tokens = 128
    normalize = staticmethod(evalai_answer)  # the EvalAI answer processor (LLaVA's m4c_evaluator.py, lmms-eval)
    subset_column = "category"
    image_id_column = "question_id"  # VizWiz names images by question
    comparability = ("local val split; papers report test-dev, scored by the EvalAI server: compare base vs VAR "
                     "here, not with a paper's number")
