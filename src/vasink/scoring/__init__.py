"""Benchmark scorers as the community computes them: pure functions, no model, no I/O (each rule and its
source: docs/benchmarks.md).

    >>> from vasink.scoring import pope_metrics, vqa_accuracy
    >>> pope_metrics(["Yes.", "No, there is not."], ["yes", "yes"])["recall"]
    0.5
    >>> vqa_accuracy("Two", ["2"] * 10)
    1.0

Rates are fractions in [0, 1]; MME uses its own points (percent per category, summed).
"""

from .chair import COCO_VOCABULARY, ObjectVocabulary, chair
from .choice import choice_accuracy, cvbench_scores, mmvp_pair_accuracy, option_letter
from .mme import COGNITION, PERCEPTION, mme_answer, mme_scores
from .pope import pope_answer, pope_metrics
from .vqa import evalai_answer, gqa_match, normalize_vqa_answer, vqa_accuracy

__all__ = [
    "pope_answer",
    "pope_metrics",
    "vqa_accuracy",
    "normalize_vqa_answer",
    "evalai_answer",
    "gqa_match",
    "option_letter",
    "choice_accuracy",
    "mmvp_pair_accuracy",
    "cvbench_scores",
    "mme_answer",
    "mme_scores",
    "PERCEPTION",
    "COGNITION",
    "chair",
    "ObjectVocabulary",
    "COCO_VOCABULARY",
]
