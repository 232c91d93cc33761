"""MMBench (Liu et al., 2023), circular evaluation: a question counts as right only if the answers to all
its rotated copies are right.

The dev split already holds the rotations: the copy of question ``i`` with its options shifted ``k``
times has index ``i + k * 1_000_000`` (MMBench's own evaluator, and lmms-eval's, group the rows by
``index % 1_000_000``). Each row is asked once, as LLaVA-1.5's ``model_vqa_mmbench.py`` asks it (hint,
question, "A. ..." options, the letter instruction); nothing is rotated again here.

Hub: ``lmms-lab/MMBench`` config ``en`` (split ``dev``; the test split has no answers; columns index,
question, hint, answer, A, B, C, D, category, image (an Image feature), source, L2-category, comment,
split). Local: MMBench's TSV (same columns, the image as base64), as LLaVA's script reads it. A file
without the rotated copies gives groups of one: circular accuracy is then plain accuracy.
"""

from __future__ import annotations

import base64
import math

from ..registry import Benchmark, Sample, ratio, register
from ._choice import LETTER_ANSWER, LETTERS, ChoiceScoring, options_block

ROTATION_STRIDE = 1_000_000  # index of the k-th rotated copy of question i: i + k * ROTATION_STRIDE


@register("mmbench")
class MMBench(ChoiceScoring, Benchmark):
    description = "MMBench dev (en), circular accuracy over the split's rotated copies"
    default_data = "lmms-lab/MMBench"
    default_config = "en"
    default_split = "dev"
    prompt_suffix = LETTER_ANSWER
    max_new_tokens = 128
    comparability = ("letters read by rule only; MMBench's server also asks ChatGPT to match answers that are not "
                     "a clear letter")

    def limit_group(self, sample: Sample) -> str:
        return sample.image_id  # a question with all its rotated copies: a cut group is not circular

    def sample_from_row(self, row) -> Sample:
        choices = []
        for letter in "ABCD":  # LLaVA's get_options: the options up to the first empty one
            value = row.get(letter, default=None)
            if _is_none(value):
                break
            choices.append(str(value))
        answer = row.text("answer").strip().upper()
        if len(choices) < 2 or answer not in LETTERS[:len(choices)]:
            raise row.error("answer", f"should be one of the option letters {LETTERS[:len(choices)]}, got {answer!r}")
        hint = row.get("hint", default=None)
        question = row.text("question")
        text = ("" if _is_none(hint) else f"{hint}\n") + f"{question}\n{options_block(choices)}"
        index = int(row.get("index"))
        return Sample(id=str(index), prompt=self.make_prompt(text), target=answer, image=_mmbench_image(row),
                      subset=row.text("category", default=""), image_id=str(index % ROTATION_STRIDE),
                      question=text, meta={"choices": choices})

    def answer_key(self, answer: dict) -> str | None:
        """LLaVA's answers (``question_id`` = the row's index, ``round_id``): round 0 is the row as asked
        here. Rounds > 0 come from ``--all-rounds``, which rotates rows that are rotated copies already
        (LLaVA-1.5's ``mmbench.sh`` does not pass it); they are left out of the score."""
        if "question_id" in answer and int(answer.get("round_id", answer.get("round_idx", 0)) or 0) > 0:
            return None
        return super().answer_key(answer)

    def unit_of(self, record) -> str:
        return record["image_id"]  # index % ROTATION_STRIDE: a question and its rotated copies

    def unit_stats(self, records):
        stats = super().unit_stats(records)
        stats["n"] = float(len(records))
        stats["circular"] = float(stats["correct"] == len(records))
        return stats

    def metrics(self, stats):
        return {"circular_accuracy": stats["circular"].mean(-1), "accuracy": ratio(stats["correct"], stats["n"])}


def _is_none(value) -> bool:
    """LLaVA's is_none: None, NaN, or the text "nan" / "none" (empty cells of options C/D and of hints)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value.strip().lower() in ("nan", "none", "")


def _mmbench_image(row):
    value = row.get("image", default=None)  # None too when the image is an Image feature (read lazily)
    if isinstance(value, str) and len(value) > 512:  # MMBench's TSV holds base64 images
        data = base64.b64decode(value)

        def load():
            from ...images import load_image

            return load_image(data, photo=False)
        return load
    return row.image("image")
