"""MME (Fu et al., 2023): yes/no questions, two per image, scored per category in points.

    >>> mme_answer("Yes, it is."), mme_answer("Nope"), mme_answer("I cannot tell.")
    ('yes', 'no', 'other')
    >>> records = [{"category": "color", "image_id": "a", "correct": True},
    ...            {"category": "color", "image_id": "a", "correct": False}]
    >>> mme_scores(records)["color"]
    {'acc': 50.0, 'acc_plus': 0.0, 'score': 50.0}
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from ._checks import as_bool, did_you_mean

# Category names as in lmms-lab/MME's "category" column (and MME's own eval tool).
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_answer(text: str) -> str:
    """"yes", "no" or "other", as MME's own tool (``eval_tool/calculation.py``) reads an answer.

    The answer is lower-cased; "yes" or "no" alone is itself; otherwise "yes" anywhere in its first four
    characters means yes, then "no" there means no ("Nope", "Not really", "None" read as no), else other.
    Leading and trailing whitespace is dropped first (LLaVA strips its outputs before writing them).
    """
    if not isinstance(text, str):
        raise TypeError(f"an MME answer must be str, not {type(text).__name__}")
    answer = text.strip().lower()
    if answer in ("yes", "no"):
        return answer
    head = answer[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def mme_scores(records: Iterable[Mapping[str, object]]) -> dict:
    """Per category ``{"acc", "acc_plus", "score"}`` and the ``"perception"`` and ``"cognition"`` totals.

    ``acc`` is the percentage of questions right, ``acc_plus`` the percentage of images whose
    questions are all right (MME has two per image), ``score = acc + acc_plus`` (at most 200). A
    total sums the scores of the categories present (full MME: at most 2000 and 800); a group with
    no category present totals NaN. Records are ``{"category", "image_id", "correct"}``.
    """
    known = PERCEPTION + COGNITION
    by_image: dict[str, dict[object, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for i, record in enumerate(records):
        for key in ("category", "image_id", "correct"):
            if key not in record:
                raise ValueError(f"record {i} has no {key!r} field")
        category = record["category"]
        if category not in known:
            raise ValueError(f"record {i}: unknown MME category {category!r}{did_you_mean(category, known)}")
        by_image[category][record["image_id"]].append(as_bool(record["correct"], f"record {i} 'correct'"))
    if not by_image:
        raise ValueError("no MME records to score")

    scores: dict = {}
    for category in known:
        if category not in by_image:
            continue
        images = by_image[category].values()
        answers = [c for image in images for c in image]
        acc = 100 * sum(answers) / len(answers)
        acc_plus = 100 * sum(all(image) for image in images) / len(images)
        scores[category] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
    for group, categories in (("perception", PERCEPTION), ("cognition", COGNITION)):
        present = [scores[c]["score"] for c in categories if c in scores]
        scores[group] = sum(present) if present else math.nan
    return scores
