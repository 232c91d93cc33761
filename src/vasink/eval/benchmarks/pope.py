"""POPE (Li et al., 2023): "Is there a <object> in the image?" on COCO, splits random / popular / adversarial.

Hub: ``lmms-lab/POPE`` (split ``test``; columns question_id, question, answer, image_source, image,
category). Local: LLaVA's / POPE's question files (``question_id``, ``image``, ``text``, ``label``; the
split from ``category`` or from the file name, e.g. ``coco_pope_random.jsonl``).
"""

from __future__ import annotations

import numpy as np

from ...scoring.pope import pope_answer, precision_recall_f1
from ..registry import Benchmark, Sample, Score, register

SPLITS = ("random", "popular", "adversarial")
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."


class PopeScoring:
    """Yes/no scoring shared by POPE and organism-pope; metrics as :func:`vasink.scoring.pope_metrics`."""

    correct_metric = "accuracy"
    higher_is_better = {"yes_ratio": None}

    def score(self, target, answer: str, meta) -> Score:
        said_yes = pope_answer(answer) == "yes"
        is_yes = str(target).strip().lower() == "yes"
        return Score("yes" if said_yes else "no", said_yes == is_yes, {
            "correct": float(said_yes == is_yes), "yes": float(said_yes),
            "tp": float(said_yes and is_yes), "fp": float(said_yes and not is_yes),
            "fn": float(is_yes and not said_yes)})

    def metrics(self, stats) -> dict[str, np.ndarray]:
        precision, recall, f1 = precision_recall_f1(*(stats[k].sum(-1) for k in ("tp", "fp", "fn")))  # per resample
        return {"accuracy": stats["correct"].mean(-1), "precision": precision, "recall": recall, "f1": f1,
                "yes_ratio": stats["yes"].mean(-1)}


@register("pope")
class Pope(PopeScoring, Benchmark):
    description = "POPE object hallucination, yes/no (random, popular, adversarial)"
    default_data = "lmms-lab/POPE"
    subsets = SPLITS
    prompt_suffix = SHORT_ANSWER
    max_new_tokens = 128
    preset = "hallucination"
    default_data_comparability = "9,000 hub questions (LLaVA-1.5 used 8,910)"
    comparability = "papers report the mean of the three splits' F1, not the pooled F1"

    def sample_from_row(self, row) -> Sample:
        split = row.text("category", default="") or _split_from_name(row.source)
        if split not in SPLITS:
            raise row.error("category", f"should be one of {SPLITS}, got {split!r}")
        answer = row.text("answer", "label").strip().lower()
        if answer not in ("yes", "no"):
            raise row.error("answer", f"should be yes or no, got {answer!r}")
        question = row.text("question", "text")
        image_id = row.text("image_source", default="") or _path_name(row.get("image", default=""))
        return Sample(id=f"{split}-{row.text('question_id')}", prompt=self.make_prompt(question), target=answer,
                      image=row.image("image"), subset=split, image_id=str(image_id), question=question,
                      source_id=row.text("question_id"))


def _path_name(value) -> str:
    return str(value) if isinstance(value, str) else ""


def _split_from_name(source: str) -> str:
    return next((s for s in SPLITS if s in source.lower()), "")
