"""POPE: yes/no object probing (Li et al., 2023), scored as LLaVA's ``eval_pope.py`` does.

    >>> pope_answer("No, there is no dog."), pope_answer("Yes, a dog is sitting.")
    ('no', 'yes')
    >>> pope_metrics(["yes", "no", "yes"], ["yes", "no", "no"])["precision"]
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_NEGATIONS = frozenset({"no", "not"})


def pope_answer(text: str) -> str:
    """``"no"`` if the first sentence holds the word "no" or "not", else ``"yes"`` (LLaVA's rule).

    The first sentence is the text before the first '.'; commas are dropped and the rest is split on
    whitespace. Unlike LLaVA (which checks "No", "no", "not" only) the match ignores case. Any other
    punctuation stays attached, as in LLaVA: "No!" reads as yes. An empty answer reads as yes.
    """
    if not isinstance(text, str):
        raise TypeError(f"a POPE answer must be str, not {type(text).__name__}")
    first_sentence = text.split(".", 1)[0]
    words = first_sentence.replace(",", "").lower().split()
    return "no" if _NEGATIONS.intersection(words) else "yes"


def _label(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower() == "yes"
    raise ValueError(f"{where} is {value!r}; a POPE label must be 'yes' or 'no'")


def pope_metrics(predictions: Sequence[str], labels: Sequence[str | bool]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (with "yes" the positive class) and the yes-ratio of the
    predictions, all fractions.

    Predictions are raw answers or "yes"/"no" (both go through :func:`pope_answer`); labels are
    "yes"/"no" (any case) or booleans. A rate whose denominator is zero is 0.
    """
    if isinstance(predictions, str) or isinstance(labels, str):
        raise TypeError("predictions and labels must be sequences, not one string")
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not predictions:
        raise ValueError("no predictions to score")
    said_yes = [pope_answer(p) == "yes" for p in predictions]
    is_yes = [_label(v, f"labels[{i}]") for i, v in enumerate(labels)]
    tp = sum(p and t for p, t in zip(said_yes, is_yes))
    fp = sum(p and not t for p, t in zip(said_yes, is_yes))
    fn = sum(t and not p for p, t in zip(said_yes, is_yes))
    tn = len(said_yes) - tp - fp - fn
    precision, recall, f1 = (float(v) for v in precision_recall_f1(tp, fp, fn))
    return {
        "accuracy": (tp + tn) / len(said_yes),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(said_yes) / len(said_yes),
    }


def precision_recall_f1(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of the "yes" class from counts (numbers, or arrays such as bootstrap
    resamples' counts); a rate whose denominator is zero is 0."""
    tp, fp, fn = (np.asarray(v, dtype=float) for v in (tp, fp, fn))

    def rate(numerator, denominator):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)

    precision, recall = rate(tp, tp + fp), rate(tp, tp + fn)
    return precision, recall, rate(2 * precision * recall, precision + recall)
