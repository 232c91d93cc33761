"""MMVP (Tong et al., 2024): 150 image pairs, two-option questions; a pair counts only if both are right.

The options, stored as "(a) Open (b) Closed", are laid out one per line as "A. Open\nB. Closed" (as
lmms-eval's and Cambrian's MMVP prompts do), then the letter instruction.

Hub: ``lmms-lab-eval/MMVP`` (split ``train``; columns Index, Question, Options, Correct Answer, image;
``MMVP/MMVP`` exposes only the images). Local: MMVP's ``Questions.csv`` (same columns) with the images
``<Index>.jpg`` in ``--images`` (default: the csv's folder).
"""

from __future__ import annotations

import re

from ...scoring import option_letter
from ..registry import Benchmark, Sample, ratio, register
from ._choice import LETTER_ANSWER, ChoiceScoring, options_block

_OPTION = re.compile(r"\(([a-zA-Z])\)\s*(.*?)\s*(?=\([a-zA-Z]\)|$)", re.DOTALL)


@register("mmvp")
class MMVP(ChoiceScoring, Benchmark):
    description = "MMVP, pair accuracy over 150 pairs"
    default_data = "lmms-lab-eval/MMVP"
    default_split = "train"
    prompt_suffix = LETTER_ANSWER
    max_new_tokens = 128
    preset = "vision-centric"

    def sample_from_row(self, row) -> Sample:
        index = int(row.text("Index", "index", "question_id"))
        if row.has("Question") or row.has("question"):
            question, options = row.text("Question", "question"), row.text("Options", "options")
        else:  # LLaVA-style question file: the options follow the question in the text
            question, _, rest = row.text("text").partition("(a)")
            question, options = question.strip(), "(a)" + rest
        choices = [text_ for _, text_ in _OPTION.findall(options)]
        if len(choices) < 2:
            raise row.error("Options", f"should list options as '(a) ... (b) ...', got {options!r}")
        text = f"{question}\n{options_block(choices)}"
        letter = option_letter(row.text("Correct Answer", "answer"), "AB")
        if letter is None:
            raise row.error("Correct Answer", "should be an option letter such as '(a)'")
        image = row.image("image") if row.has("image") else row._path(f"{index}.jpg")
        return Sample(id=f"{index:03d}", prompt=self.make_prompt(text), target=letter, image=image,
                      image_id=str(index), question=text, meta={"choices": choices, "pair": (index - 1) // 2},
                      source_id=str(index))

    def limit_group(self, sample: Sample) -> str:
        return str(sample.meta["pair"])  # both questions of a pair

    def group_stats(self, meta, right: bool) -> dict[str, float]:
        return {"n": 1.0}  # per pair: both questions right

    def unit_of(self, record) -> str:
        return f"pair{int(record['id']) - 1 >> 1}"

    def unit_stats(self, records):
        stats = super().unit_stats(records)
        stats["pair_right"] = float(stats["correct"] == stats["n"] == 2)
        stats["pairs"] = float(stats["n"] == 2)
        return stats

    def metrics(self, stats):
        return {"pair_accuracy": ratio(stats["pair_right"], stats["pairs"], float("nan")),
                "accuracy": ratio(stats["correct"], stats["n"])}
