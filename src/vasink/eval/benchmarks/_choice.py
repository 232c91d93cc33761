"""Shared by the multiple-choice benchmarks: LLaVA's option layout and option-letter scoring."""

from __future__ import annotations

import numpy as np

from ...scoring import option_letter
from ..registry import Score, ratio

LETTERS = "ABCDEFGH"
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."


def options_block(choices) -> str:
    """"A. red\\nB. blue" (LLaVA's layout for ScienceQA, MMBench, SEED)."""
    return "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))


class ChoiceScoring:
    """``target`` is the right letter, ``meta["choices"]`` the option texts in letter order."""

    def score(self, target, answer: str, meta) -> Score:
        choices = meta.get("choices") or []
        letters = LETTERS[:len(choices)] if choices else LETTERS[:4]
        letter = option_letter(answer, letters, choices=choices or None)
        right = letter == target
        return Score(letter, right, {"correct": float(right), **self.group_stats(meta, right)})

    def group_stats(self, meta, right: bool) -> dict[str, float]:
        """Extra per-sample stats (e.g. :func:`group_counts` of the sample's source)."""
        return {}


def group_counts(group: str, right: bool) -> dict[str, float]:
    """Per-sample stats from which :func:`group_accuracy` gives the accuracy within ``group``."""
    return {f"n_{group}": 1.0, f"right_{group}": float(right)}


def group_accuracy(stats, group: str) -> np.ndarray:
    """Accuracy within ``group`` (NaN where a resample holds none of it; a group absent from a run counts 0)."""
    zeros = np.zeros_like(stats["correct"])
    return ratio(stats.get(f"right_{group}", zeros), stats.get(f"n_{group}", zeros), np.nan)
