"""MMBench (Liu et al., 2023), circular evaluation: each question is asked once per rotation of its
options, and counts as right only if every rotation is.

Hub: ``lmms-lab/MMBench`` config ``en`` (split ``dev``; the test split has no answers; columns index,
question, hint, answer, A, B, C, D, category, image, source, L2-category, comment, split). Local:
MMBench's TSV (same columns, image as base64 or a path).
"""

from __future__ import annotations

import base64
import io

from ..registry import Benchmark, Sample, ratio, register
from ._choice import LETTER_ANSWER, LETTERS, ChoiceScoring, options_block


@register("mmbench")
class MMBench(ChoiceScoring, Benchmark):
    description = "MMBench dev (en), circular accuracy"
    default_data = "lmms-lab/MMBench"
    default_config = "en"
    default_split = "dev"
    prompt_suffix = LETTER_ANSWER
    max_new_tokens = 128

    def samples_from_row(self, row) -> list[Sample]:
        """One sample per rotation of the options (circular evaluation)."""
        choices = [row.text(c) for c in "ABCD" if _present(row.get(c, default=None))]
        answer = row.text("answer").strip().upper()
        if len(choices) < 2 or answer not in LETTERS[:len(choices)]:
            raise row.error("answer", f"should be one of the option letters {LETTERS[:len(choices)]}, got {answer!r}")
        hint = row.text("hint", default="")
        hint = hint.strip() if _present(hint) else ""
        image = _mmbench_image(row)
        index = str(row.get("index"))
        samples = []
        for shift in range(len(choices)):
            rotated = choices[shift:] + choices[:shift]
            target = LETTERS[rotated.index(choices[LETTERS.index(answer)])]
            text = (f"{hint}\n" if hint else "") + f"{row.text('question')}\n{options_block(rotated)}"
            samples.append(Sample(id=f"{index}-r{shift}", prompt=self.make_prompt(text), target=target, image=image,
                                  subset=row.text("category", default=""), image_id=index, question=text,
                                  meta={"choices": rotated}))
        return samples

    def answer_key(self, answer: dict) -> str:
        """LLaVA's MMBench answers: the row's index and the round (round r = options rotated by r, as here)."""
        return f"{super().answer_key(answer)}-r{int(answer.get('round_idx', 0))}"

    def unit_of(self, record) -> str:
        return record["image_id"]

    def unit_stats(self, records):
        stats = super().unit_stats(records)
        stats["n"] = float(len(records))
        stats["circular"] = float(stats["correct"] == len(records))
        return stats

    def metrics(self, stats):
        return {"circular_accuracy": stats["circular"].mean(-1), "accuracy": ratio(stats["correct"], stats["n"])}


def _present(value) -> bool:
    """False for the empty cells of options C/D (None, NaN, or "nan" in the TSV)."""
    if value is None or (isinstance(value, float) and value != value):
        return False
    return str(value).strip().lower() != "nan"


def _mmbench_image(row):
    value = row.get("image")
    if isinstance(value, str) and len(value) > 512:  # MMBench's TSV holds base64 images
        data = base64.b64decode(value)

        def load():
            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
        return load
    return row.image("image")
