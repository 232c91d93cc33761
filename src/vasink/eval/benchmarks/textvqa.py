"""TextVQA (Singh et al., 2019): questions about text in images, VQA accuracy.

``textvqa`` prompts as LLaVA-1.5's ``llava_textvqa_val_v051_ocr.jsonl`` does, with the dataset's
reference OCR tokens (Rosetta, v0.5.1) between the question and the short-answer line::

    what is the brand of this camera?
    Reference OCR token: dakota, digital, single-use, camera
    Answer the question using a single word or phrase.

(the OCR line is left out when a row has no tokens). ``textvqa-plain`` asks the question alone, as
lmms-eval's default ``textvqa_val`` does. The benchmark's name in a run's report says which was used;
the two are different numbers.

Hub: ``lmms-lab/textvqa`` (split ``validation``; columns image_id, question_id, question, question_tokens,
image, image_width, image_height, flickr_original_url, flickr_300k_url, answers, image_classes, set_name,
ocr_tokens). Local: LLaVA's question JSONL (its ``text`` already holds the OCR line) with an ``answers``
list.
"""

from __future__ import annotations

from ...scoring import evalai_answer
from ..registry import Benchmark, register
from .pope import SHORT_ANSWER
from .vqav2 import VqaScoring

OCR_LINE = "\nReference OCR token: "


@register("textvqa")
class TextVQA(VqaScoring, Benchmark):
    description = "TextVQA val, VQA accuracy; LLaVA-1.5's prompt with the reference OCR tokens"
    default_data = "lmms-lab/textvqa"
    default_split = "validation"
    prompt_suffix = SHORT_ANSWER
    max_new_tokens = 128
    normalize = staticmethod(evalai_answer)  # the EvalAI answer processor (LLaVA's m4c_evaluator.py, lmms-eval)
    with_ocr_tokens = True

    def question_text(self, row, question: str) -> str:
        tokens = row.texts("ocr_tokens") if self.with_ocr_tokens and row.get("ocr_tokens", default=None) else []
        return question + (OCR_LINE + ", ".join(tokens) if tokens else "")


@register("textvqa-plain")
class TextVQAPlain(TextVQA):
    description = "TextVQA val, VQA accuracy; the question alone (no OCR tokens)"
    with_ocr_tokens = False
    comparability = "no OCR tokens: lmms-eval's default prompt, not LLaVA-1.5's TextVQA setting"
