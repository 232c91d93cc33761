"""Open-ended VQA accuracy (VQAv2, TextVQA, VizWiz) with the EvalAI answer normalization, and GQA's
exact match.

    >>> normalize_vqa_answer("Two dogs."), normalize_vqa_answer("The dont")
    ('2 dogs', "don't")
    >>> vqa_accuracy("two", ["2", "2", "2", "3", "3", "3", "3", "3", "3", "3"])
    0.9

The tables below are the official VQA evaluation's (``vqaEval.py``): punctuation, number words,
articles and contraction repairs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

# Removed (or turned into a space, see _strip_punctuation); '.' and "'" are handled apart.
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
# Apostrophe-less spellings -> the form annotators wrote. The official table also has keys with capitals
# ("Im", "Ive", "Id've", "I'dve"), which never match its lower-cased words, and a no-op "she's"; both
# are left out. "somebody'd" -> "somebodyd" runs backwards in the official table and is kept as is.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}

_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
# A period not followed by a digit goes ("yes." -> "yes", "3.5" stays). The official pattern also
# meant to keep periods after a digit, but its look-behind is written as a look-ahead and never fires.
_PERIOD = re.compile(r"\.(?!\d)")


def _strip_punctuation(text: str) -> str:
    # Official rule: a mark that touches a space somewhere in the answer, or any mark at all when the
    # answer has a comma between digits ("1,000"), is deleted; otherwise it becomes a space ("t-shirt").
    delete_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def evalai_answer(text: str) -> str:
    """An answer as the EvalAI answer processor reads it (LLaVA's ``m4c_evaluator.py`` for TextVQA and its
    VizWiz / VQAv2 submission converters; lmms-eval's TextVQA and VizWiz): first lower-cased with commas and
    question marks deleted and "'s" split off ("what's" -> "what 's"), then :func:`normalize_vqa_answer`."""
    if not isinstance(text, str):
        raise TypeError(f"a VQA answer must be str, not {type(text).__name__}")
    return normalize_vqa_answer(text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip())


def normalize_vqa_answer(text: str) -> str:
    """An answer as the VQA evaluation compares it: punctuation handled, lower-cased, number words as
    digits, articles dropped, apostrophe-less contractions repaired, single spaces."""
    if not isinstance(text, str):
        raise TypeError(f"a VQA answer must be str, not {type(text).__name__}")
    text = _strip_punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str | Mapping[str, str]],
                 normalize: Callable[[str], str] | None = None) -> float:
    """VQA accuracy of one prediction against the human answers (typically 10), in [0, 1].

    Prediction and answers are normalized with ``normalize`` (default :func:`normalize_vqa_answer`, the VQA
    evaluation's; :func:`evalai_answer` is TextVQA's and VizWiz's); the score is the mean,
    over leaving out each human answer in turn, of min(1, matches among the others / 3). With 10
    answers: 1 match -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1. Shorter lists are treated the same
    way (so a single answer always scores 0). Answers may be strings or VQAv2-style dicts with an
    ``"answer"`` key.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of answers, not one string")
    if not answers:
        raise ValueError("no ground-truth answers")
    texts = [a["answer"] if isinstance(a, Mapping) else a for a in answers]
    normalize = normalize or normalize_vqa_answer
    truth = [normalize(a) for a in texts]
    pred = normalize(prediction)
    matches = sum(t == pred for t in truth)
    # leaving out a matching answer leaves matches - 1; leaving out another leaves matches
    total = matches * min(1.0, (matches - 1) / 3) + (len(truth) - matches) * min(1.0, matches / 3)
    return total / len(truth)


def _gqa_form(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


def gqa_match(prediction: str, answer: str) -> bool:
    """GQA exact match: equal after stripping spaces, dropping trailing periods and lower-casing."""
    if not isinstance(prediction, str) or not isinstance(answer, str):
        raise TypeError("GQA prediction and answer must be str")
    return _gqa_form(prediction) == _gqa_form(answer)
