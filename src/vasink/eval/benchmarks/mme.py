"""MME (Fu et al., 2023): two yes/no questions per image, 14 categories, scored in points.

Prompt as LLaVA-1.5's ``llava_mme.jsonl``: the question without MME's " Please answer yes or no." and the
short-answer line (LLaVA's ``convert_answer_to_mme.py`` puts the request back to find the ground truth).
Answers are read as MME's own tool reads them (:func:`vasink.scoring.mme_answer`).

Hub: ``lmms-lab/MME`` (split ``test``; columns question_id (``category/file``), image, question, answer,
category). Local: LLaVA's ``llava_mme.jsonl`` layout (``question_id``, ``image``, ``text``, ``category``)
with an ``answer`` field (Yes/No).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ...scoring import COGNITION, PERCEPTION, mme_answer
from ..registry import Benchmark, Sample, Score, ratio, register
from .pope import SHORT_ANSWER

CATEGORIES = PERCEPTION + COGNITION
ANSWER_REQUEST = "Please answer yes or no."  # ends every MME question; LLaVA-1.5's question file drops it


def plain_question(text: str) -> str:
    """An MME question as LLaVA-1.5 asks it: without the short-answer line and the yes/no request."""
    text = text.replace(SHORT_ANSWER.strip(), "").strip()
    if text.endswith(ANSWER_REQUEST):
        text = text[:-len(ANSWER_REQUEST)].rstrip()
    return text


@register("mme")
class MME(Benchmark):
    description = "MME perception (10 categories, max 2000) and cognition (4, max 800)"
    default_data = "lmms-lab/MME"
    subsets = CATEGORIES
    prompt_suffix = SHORT_ANSWER
    max_new_tokens = 128

    def sample_from_row(self, row) -> Sample:
        category = row.text("category")
        if category not in CATEGORIES:
            raise row.error("category", f"is {category!r}, not an MME category ({', '.join(CATEGORIES)})")
        answer = row.text("answer", "label").strip().lower()
        if answer not in ("yes", "no"):
            raise row.error("answer", f"should be Yes or No, got {answer!r}")
        question = plain_question(row.text("question", "text"))
        question_id = row.text("question_id")
        image_id = question_id if "/" in question_id else row.text("image", default=question_id)
        return Sample(id=f"{question_id}/{hash_text(question)}", prompt=self.make_prompt(question),
                      target=answer, image=row.image("image"), subset=category, image_id=str(image_id),
                      question=question, meta={"category": category},
                      source_id=f"{question_id}|{question}")  # two questions per image share an id

    def answer_key(self, answer: dict) -> str | None:
        """A vasink record: its ``id``. LLaVA's MME answers: the image's ``question_id`` and the question
        read from ``prompt`` (with or without the short-answer line and the yes/no request)."""
        if "question_id" not in answer:
            return super().answer_key(answer)
        return f"{answer['question_id']}|{plain_question(str(answer.get('prompt', '')))}"

    def score(self, target, answer, meta) -> Score:
        parsed = mme_answer(answer)
        right = parsed == target
        category = meta["category"]
        return Score(parsed, right, {"correct": float(right), "questions": 1.0, f"q_{category}": 1.0,
                                     f"right_{category}": float(right)})

    def limit_group(self, sample: Sample) -> str:
        return sample.image_id  # both questions of an image (acc+ needs the pair)

    def unit_of(self, record) -> str:
        return f"{record['subset']}/{record['image_id']}"

    def unit_stats(self, records):
        stats = super().unit_stats(records)
        for category in CATEGORIES:
            if stats.get(f"q_{category}"):
                stats[f"img_{category}"] = 1.0
                stats[f"plus_{category}"] = float(stats[f"right_{category}"] == stats[f"q_{category}"])
        return stats

    def metrics(self, stats):
        zeros = np.zeros_like(stats["correct"])
        out = {"accuracy": ratio(stats["correct"], stats.get("questions", zeros))}  # a fraction of the questions
        totals = {"perception": [], "cognition": []}
        for category in CATEGORIES:
            asked = stats.get(f"q_{category}", zeros)
            if not asked.any():
                continue
            acc = 100 * ratio(stats.get(f"right_{category}", zeros), asked, np.nan)
            plus = 100 * ratio(stats.get(f"plus_{category}", zeros), stats.get(f"img_{category}", zeros), np.nan)
            out[category] = acc + plus
            totals["perception" if category in PERCEPTION else "cognition"].append(np.nan_to_num(acc + plus))
        for group, scores in totals.items():
            out[group] = np.sum(scores, axis=0) if scores else np.full(zeros.shape[:-1], np.nan)
        return out


def hash_text(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]
