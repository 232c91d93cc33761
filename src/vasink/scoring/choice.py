"""Multiple-choice answers: option letters, plain accuracy, MMVP pairs and CV-Bench's 2D/3D scores.

    >>> option_letter("(B) a red car"), option_letter("The answer is C."), option_letter("a dog")
    ('B', 'C', None)
    >>> mmvp_pair_accuracy([True, True, True, False])
    0.5
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from ._checks import as_bool, did_you_mean

DEFAULT_OPTIONS = "ABCDEFGH"

# CV-Bench's "source" column; 2D tasks come from ADE20K and COCO, 3D tasks from Omni3D.
CVBENCH_2D_SOURCES = ("ADE20K", "COCO")
CVBENCH_3D_SOURCES = ("Omni3D",)

_WHOLE = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")  # "B", "b", "(B)", "[b]", "B.", "B:"
_STATED = re.compile(r"(?i:\b(?:answer|option|choice)\b)(?:\s+(?i:is))?\s*[:\-]?\s*"
                     r"(?:[(\[]([A-Za-z])[)\]]|([A-Z])\b)")  # "answer is B", "Answer: (b)", "option C"
_LEADING = re.compile(r"(?:[(\[]([A-Za-z])[)\]]|([A-Z])[.:,)])")  # "B. red", "B) red", "(b) red"
_BRACKETED = re.compile(r"[(\[]([A-Za-z])[)\]]")  # "(B)" anywhere
_CAPITAL = re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])")


def _option_letters(options: str | Iterable[str]) -> tuple[str, ...]:
    letters = tuple(o.strip().upper() for o in options)
    if not letters or any(len(o) != 1 or not o.isalpha() for o in letters):
        raise ValueError(f"options must be single letters, got {options!r}")
    return letters


def option_letter(text: str, options: str | Iterable[str] = DEFAULT_OPTIONS,
                  choices: Sequence[str] | None = None) -> str | None:
    """The option letter a free-form answer picks, upper-case, or None if it picks none clearly.

    Tried in order: the whole answer is a letter ("B", "(b)", "B."); a stated answer ("The answer is
    B", "Answer: (B)", "option B"); a leading letter ("B. red", "(B) red"); the first bracketed letter;
    a single capital option letter standing alone ("I think B"; a sentence-opening "A" before a
    lower-case word is read as the article; two different letters are ambiguous). Lower-case letters
    count only alone or in brackets. Letters outside ``options`` are ignored. If ``choices`` (the
    option texts, in letter order) is given and no letter is found, an answer equal to one choice, or
    containing exactly one, picks it.
    """
    if not isinstance(text, str):
        raise TypeError(f"an answer must be str, not {type(text).__name__}")
    letters = _option_letters(options)
    answer = text.strip()
    if not answer:
        return None
    if m := _WHOLE.fullmatch(answer):
        return m.group(1).upper() if m.group(1).upper() in letters else None
    for m in (_STATED.search(answer), _LEADING.match(answer)):
        if m and (letter := (m.group(1) or m.group(2)).upper()) in letters:
            return letter
    for m in _BRACKETED.finditer(answer):
        if m.group(1).upper() in letters:
            return m.group(1).upper()
    standing = set()
    for m in _CAPITAL.finditer(answer):
        letter = m.group(1)
        before = answer[:m.start()].rstrip()
        opens_sentence = not before or before[-1] in ".!?"
        if letter in ("A", "I") and opens_sentence and re.match(r" [a-z]", answer[m.end():m.end() + 2]):
            continue  # "A dog ...", "I think ...": the article / pronoun, not an option
        if letter in letters:
            standing.add(letter)
    if len(standing) == 1:
        return standing.pop()
    if choices is not None and not standing:
        return _letter_from_choices(answer, choices, letters)
    return None


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _letter_from_choices(answer: str, choices: Sequence[str], letters: Sequence[str]) -> str | None:
    if len(choices) > len(letters):
        raise ValueError(f"{len(choices)} choices but only {len(letters)} option letters")
    said = _plain(answer)
    texts = [_plain(c) for c in choices]
    for letter, choice in zip(letters, texts):
        if choice and said == choice:
            return letter
    contained = [letter for letter, choice in zip(letters, texts)
                 if choice and re.search(rf"\b{re.escape(choice)}\b", said)]
    return contained[0] if len(contained) == 1 else None


def choice_accuracy(predictions: Sequence[str], answers: Sequence[str],
                    options: str | Iterable[str] = DEFAULT_OPTIONS) -> float:
    """Fraction of predictions whose option letter equals the answer's (answers like "B" or "(b)")."""
    if isinstance(predictions, str) or isinstance(answers, str):
        raise TypeError("predictions and answers must be sequences, not one string")
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
    if not predictions:
        raise ValueError("no predictions to score")
    letters = _option_letters(options)
    right = 0
    for i, (prediction, answer) in enumerate(zip(predictions, answers)):
        truth = option_letter(answer, letters) if isinstance(answer, str) else None
        if truth is None:
            raise ValueError(f"answers[{i}] is {answer!r}, not an option letter among {''.join(letters)}")
        right += option_letter(prediction, letters) == truth
    return right / len(predictions)


def mmvp_pair_accuracy(correct: Sequence[bool]) -> float:
    """MMVP: fraction of question pairs (0, 1), (2, 3), ... with both questions right."""
    if isinstance(correct, (str, bytes)):
        raise TypeError("correct must be a sequence of booleans")
    flags = [as_bool(c, f"correct[{i}]") for i, c in enumerate(correct)]
    if not flags:
        raise ValueError("no MMVP answers to score")
    if len(flags) % 2:
        raise ValueError(f"MMVP answers come in pairs, got an odd count ({len(flags)})")
    pairs = len(flags) // 2
    return sum(flags[2 * k] and flags[2 * k + 1] for k in range(pairs)) / pairs


def cvbench_scores(records: Iterable[Mapping[str, object]]) -> dict[str, float]:
    """CV-Bench accuracies, fractions: one per source (ADE20K, COCO, Omni3D), ``"2d"`` = mean of the
    ADE20K and COCO accuracies, ``"3d"`` = Omni3D accuracy, ``"overall"`` = mean of 2d and 3d.

    Records are ``{"source": ..., "correct": bool}``. A source with no records scores NaN, and so does
    every mean that needs it (a ``--limit`` run may not reach all three).
    """
    known = CVBENCH_2D_SOURCES + CVBENCH_3D_SOURCES
    tallies = {source: [0, 0] for source in known}  # right, total
    for i, record in enumerate(records):
        for key in ("source", "correct"):
            if key not in record:
                raise ValueError(f"record {i} has no {key!r} field")
        source = record["source"]
        if source not in tallies:
            raise ValueError(f"record {i}: unknown CV-Bench source {source!r}; known: {', '.join(known)}"
                             f"{did_you_mean(source, known)}")
        tallies[source][0] += as_bool(record["correct"], f"record {i} 'correct'")
        tallies[source][1] += 1
    if not any(total for _, total in tallies.values()):
        raise ValueError("no CV-Bench records to score")
    scores = {s: right / total if total else math.nan for s, (right, total) in tallies.items()}
    scores["2d"] = sum(scores[s] for s in CVBENCH_2D_SOURCES) / len(CVBENCH_2D_SOURCES)
    scores["3d"] = sum(scores[s] for s in CVBENCH_3D_SOURCES) / len(CVBENCH_3D_SOURCES)
    scores["overall"] = (scores["2d"] + scores["3d"]) / 2
    return scores
