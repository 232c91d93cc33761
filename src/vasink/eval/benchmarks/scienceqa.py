"""ScienceQA-IMG (Lu et al., 2022): science multiple choice with an image; option-letter accuracy.

Hub: ``lmms-lab/ScienceQA`` config ``ScienceQA-IMG`` (split ``test``; columns image, question, choices,
answer (index), hint, task, grade, subject, topic, category, skill, lecture, solution).
"""

from __future__ import annotations

from ..registry import Benchmark, Sample, register
from ._choice import LETTER_ANSWER, LETTERS, ChoiceScoring, options_block


@register("scienceqa-img")
class ScienceQAImg(ChoiceScoring, Benchmark):
    description = "ScienceQA image questions, option-letter accuracy"
    default_data = "lmms-lab/ScienceQA"
    default_config = "ScienceQA-IMG"
    subsets = ("natural science", "social science", "language science")
    prompt_suffix = LETTER_ANSWER
    max_new_tokens = 128

    def sample_from_row(self, row) -> Sample:
        question, choices = row.text("question", "text"), row.texts("choices")
        answer = row.get("answer")
        if not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise row.error("answer", f"should be the index of the right choice (0..{len(choices) - 1}), "
                                      f"got {answer!r}")
        hint = row.text("hint", default="").strip()
        text = (f"Context: {hint}\n" if hint else "") + f"{question}\n{options_block(choices)}"
        return Sample(id=f"{row.index:05d}", prompt=self.make_prompt(text), target=LETTERS[answer],
                      image=row.image("image"), subset=row.text("subject", default=""), question=text,
                      image_id=f"{row.index:05d}", meta={"choices": choices})
