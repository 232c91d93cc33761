"""SEED-Bench (Li et al., 2023), image questions: four options, option-letter accuracy.

Hub: ``lmms-lab/SEED-Bench`` (split ``test``; columns answer, choice_a..choice_d, data_id, data_type,
question, question_id, question_type_id, image (a list), segment). Video rows (data_type "video") are
skipped, as LLaVA's SEED-IMG evaluation does.
"""

from __future__ import annotations

from ...scoring import option_letter
from ..registry import Benchmark, Sample, register
from ._choice import LETTER_ANSWER, ChoiceScoring, options_block


@register("seed")
class SEEDBench(ChoiceScoring, Benchmark):
    description = "SEED-Bench image questions, option-letter accuracy"
    default_data = "lmms-lab/SEED-Bench"
    prompt_suffix = LETTER_ANSWER
    max_new_tokens = 128

    def samples_from_row(self, row) -> list[Sample]:
        return [self.sample_from_row(row)] if row.text("data_type", default="image") == "image" else []

    def sample_from_row(self, row) -> Sample:
        letter = option_letter(row.text("answer"), "ABCD")
        if letter is None:
            raise row.error("answer", "should be A, B, C or D")
        if row.has("choice_a"):
            choices = [row.text(f"choice_{c}") for c in "abcd"]
            text = f"{row.text('question')}\n{options_block(choices)}"
        else:  # LLaVA question file: the options are part of the text
            choices, text = [], row.text("text")
        return Sample(id=row.text("question_id"), prompt=self.make_prompt(text), target=letter,
                      image=row.image("image", "data_id"), subset=str(row.get("question_type_id", default="")),
                      image_id=str(row.get("data_id", default="")), question=text, meta={"choices": choices})
