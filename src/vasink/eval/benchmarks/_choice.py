"""Shared by the multiple-choice benchmarks: LLaVA's option layout and option-letter scoring."""

from __future__ import annotations

from ...scoring import option_letter
from ..registry import Score

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
        return Score(letter, right, {"correct": float(right)})
