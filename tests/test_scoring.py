"""Scorers on hand-computed cases; each rule's source is named in docs/benchmarks.md."""

import math

import numpy as np
import pytest

from vasink.scoring import (
    COGNITION, PERCEPTION, chair, choice_accuracy, cvbench_scores, evalai_answer, gqa_match, mme_answer,
    mme_scores, mmvp_pair_accuracy, normalize_vqa_answer, option_letter, pope_answer, pope_metrics, vqa_accuracy,
)
from vasink.scoring.coco_objects import CATEGORIES

# ---------------------------------------------------------------- POPE


@pytest.mark.parametrize("text, expected", [
    ("Yes.", "yes"), ("yes", "yes"), ("YES", "yes"),
    ("No, there is not", "no"), ("There is no dog.", "no"), ("No.", "no"), ("NOT at all", "no"),
    ("", "yes"),  # LLaVA's rule: nothing negative said
    ("Yes. But no cat.", "yes"),  # only the first sentence counts
    ("Nothing, notably", "yes"),  # whole words only
    ("No!", "yes"),  # punctuation other than commas stays attached, as in LLaVA
    ("No, it is a cat.", "no"),  # LLaVA's eval_pope.py drops commas before splitting: "No," reads as "No"
    ("Yes, there is no cat.", "no"),  # any "no" in the first sentence
])
def test_pope_answer_follows_llava(text, expected):
    assert pope_answer(text) == expected


def test_pope_metrics_by_hand():
    predictions = ["Yes.", "No, there is not.", "yes", "There is no cat.", "Yes, there is.", ""]
    labels = ["yes", "no", "no", "yes", "yes", "no"]
    # parsed: yes no yes no yes yes -> TP 2, FP 2, FN 1, TN 1
    m = pope_metrics(predictions, labels)
    assert m["accuracy"] == 0.5
    assert m["precision"] == 0.5
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["yes_ratio"] == pytest.approx(4 / 6)  # of the predictions; the labels' ratio is 0.5
    assert set(m) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}


def test_pope_metrics_zero_division_and_bool_labels():
    m = pope_metrics(["no", "no"], [True, False])
    assert m == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}


@pytest.mark.parametrize("predictions, labels, fragment", [
    (["yes"], ["yes", "no"], "1 predictions but 2 labels"),
    ([], [], "no predictions"),
    (["yes"], ["maybe"], r"labels\[0\]"),
])
def test_pope_metrics_bad_input(predictions, labels, fragment):
    with pytest.raises(ValueError, match=fragment):
        pope_metrics(predictions, labels)


# ---------------------------------------------------------------- VQA / GQA


@pytest.mark.parametrize("text, expected", [
    ("What's that?", "what 's that"), ("a,b", "ab"), ("Two dogs.", "2 dogs"), ("The dont", "don't"),
])
def test_evalai_answer_processor(text, expected):
    """TextVQA's m4c_evaluator.py / EvalAI: commas and "?" deleted and "'s" split off before VQA's rules."""
    assert evalai_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("yes.", "yes"), ("Yes!", "yes"), ("it's", "it's"), ("dont", "don't"), ("Two dogs", "2 dogs"),
    ("the cat", "cat"), ("an apple", "apple"), ("1,000", "1000"), ("3.5", "3.5"), ("t-shirt", "t shirt"),
    ("red, white", "red white"), ("  none\t", "0"),
])
def test_vqa_normalization(text, expected):
    assert normalize_vqa_answer(text) == expected


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_leave_one_out(matches, expected):
    # leaving out a matching answer leaves m-1 matches (m subsets), any other leaves m (10-m subsets):
    # m=3 -> (3 * 2/3 + 7 * 1) / 10 = 0.9
    answers = ["2"] * matches + ["3"] * (10 - matches)
    assert vqa_accuracy("two", answers) == pytest.approx(expected)


def test_vqa_accuracy_normalizes_both_sides():
    assert vqa_accuracy("A dog.", ["dog"] * 10) == 1.0
    assert vqa_accuracy("dont know", ["don't know"] * 10) == 1.0
    assert vqa_accuracy("its", ["it's"] * 10) == 0.0
    assert vqa_accuracy("Two", [{"answer": "2", "answer_id": i} for i in range(10)]) == 1.0


def test_vqa_accuracy_short_answer_lists():
    # 3 answers, 2 match: (1/3 + 1/3 + 2/3) / 3
    assert vqa_accuracy("2", ["2", "2", "3"]) == pytest.approx(4 / 9)
    assert vqa_accuracy("2", ["2"]) == 0.0  # nothing left to agree with
    with pytest.raises(ValueError, match="no ground-truth"):
        vqa_accuracy("2", [])
    with pytest.raises(TypeError):
        vqa_accuracy("2", "2")


@pytest.mark.parametrize("prediction, answer, expected", [
    ("Yes.", "yes", True), (" Left ", "left", True), ("red car", "car", False), ("no", "yes", False),
])
def test_gqa_match(prediction, answer, expected):
    assert gqa_match(prediction, answer) is expected


# ---------------------------------------------------------------- option letters, MMVP, CV-Bench


@pytest.mark.parametrize("text, expected", [
    ("(B)", "B"), ("B.", "B"), ("B", "B"), ("b", "B"), ("The answer is B", "B"), ("Answer: (c)", "C"),
    ("The correct option is D.", "D"), ("B) red", "B"), ("(a) Open", "A"), ("A. red", "A"),
    ("I think (B) is right", "B"), ("I think B", "B"), ("C is right", "C"),
    ("A dog is there", None), ("The answer is a dog", None), ("Between A and B", None), ("", None),
    ("E", None),  # not among the options
])
def test_option_letter(text, expected):
    assert option_letter(text, "ABCD") == expected


def test_option_letter_from_choice_text():
    assert option_letter("Open.", "AB", choices=["Open", "Closed"]) == "A"
    assert option_letter("The door is closed", "AB", choices=["Open", "Closed"]) == "B"
    assert option_letter("Neither", "AB", choices=["Open", "Closed"]) is None
    with pytest.raises(ValueError, match="single letters"):
        option_letter("A", "AB1")


def test_choice_accuracy():
    predictions = ["(B)", "The answer is C", "a dog", "A"]
    answers = ["B", "(c)", "(A)", "(A)"]
    assert choice_accuracy(predictions, answers) == 0.75
    with pytest.raises(ValueError, match=r"answers\[0\] is 'Z'"):
        choice_accuracy(["A"], ["Z"])
    with pytest.raises(ValueError, match="1 predictions but 2 answers"):
        choice_accuracy(["A"], ["A", "B"])


def test_mmvp_pairs():
    assert mmvp_pair_accuracy([True, True, True, False, False, False, True, True]) == 0.5
    assert mmvp_pair_accuracy(np.array([1, 1], dtype=bool)) == 1.0
    with pytest.raises(ValueError, match="odd"):
        mmvp_pair_accuracy([True, True, False])
    with pytest.raises(ValueError, match=r"correct\[1\]"):
        mmvp_pair_accuracy([True, "yes"])
    with pytest.raises(ValueError, match="no MMVP"):
        mmvp_pair_accuracy([])


def _cv(source, *flags):
    return [{"source": source, "correct": f} for f in flags]


def test_cvbench_2d_3d_overall():
    records = _cv("ADE20K", True, True, False) + _cv("COCO", True, True) + _cv("Omni3D", True, False, False, False)
    s = cvbench_scores(records)
    assert s["ADE20K"] == pytest.approx(2 / 3) and s["COCO"] == 1.0 and s["Omni3D"] == 0.25
    assert s["2d"] == pytest.approx(5 / 6)  # mean of the two sources, not pooled (4/5)
    assert s["3d"] == 0.25
    assert s["overall"] == pytest.approx(13 / 24)


def test_cvbench_missing_and_unknown_sources():
    s = cvbench_scores(_cv("COCO", True))
    assert math.isnan(s["ADE20K"]) and math.isnan(s["2d"]) and math.isnan(s["overall"]) and s["COCO"] == 1.0
    with pytest.raises(ValueError, match="'Omni3d'.*did you mean 'Omni3D'"):
        cvbench_scores(_cv("Omni3d", True))
    with pytest.raises(ValueError, match="no 'correct'"):
        cvbench_scores([{"source": "COCO"}])
    with pytest.raises(ValueError, match="no CV-Bench records"):
        cvbench_scores([])


# ---------------------------------------------------------------- MME


def _mme(category, image_id, *flags):
    return [{"category": category, "image_id": image_id, "correct": f} for f in flags]


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"), ("no", "no"), (" No.", "no"), ("Yes, the car is red.", "yes"),
    # MME's eval_tool/calculation.py: "yes", then "no", looked for in the first four characters
    ("Nope", "no"), ("Not really", "no"), ("None", "no"), ("A no.", "no"), ("Yesterday", "yes"),
    ("I think yes", "other"), ("Maybe", "other"), ("", "other"), ("y", "other"),
])
def test_mme_answer_follows_mmes_tool(text, expected):
    assert mme_answer(text) == expected


def test_mme_by_hand():
    records = (_mme("color", "a", True, True) + _mme("color", "b", True, False)
               + _mme("count", "c", False, False) + _mme("count", "d", True, True) + _mme("count", "e", True, False)
               + _mme("code_reasoning", "f", True, True))
    s = mme_scores(records)
    assert s["color"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert s["count"]["acc"] == 50.0
    assert s["count"]["acc_plus"] == pytest.approx(100 / 3)
    assert s["perception"] == pytest.approx(125 + 50 + 100 / 3)
    assert s["cognition"] == 200.0
    assert "existence" not in s


def test_mme_categories_and_errors():
    assert len(PERCEPTION) == 10 and len(COGNITION) == 4 and "OCR" in PERCEPTION
    assert math.isnan(mme_scores(_mme("OCR", 1, True, True))["cognition"])
    with pytest.raises(ValueError, match="'ocr'.*did you mean 'OCR'"):
        mme_scores(_mme("ocr", 1, True))
    with pytest.raises(ValueError, match="no 'image_id'"):
        mme_scores([{"category": "OCR", "correct": True}])
    with pytest.raises(ValueError, match="expected True or False"):
        mme_scores(_mme("OCR", 1, "yes"))


# ---------------------------------------------------------------- CHAIR


def test_chair_one_caption():
    r = chair(["Two dogs and a cat on a couch."], [["dog", "couch"]])
    assert (r["chair_s"], r["chair_i"], r["recall"]) == (1.0, pytest.approx(1 / 3), 1.0)
    assert r["per_caption"][0] == {"mentioned": ["dog", "cat", "couch"], "hallucinated": ["cat"],
                                   "ground_truth": ["couch", "dog"]}


def test_chair_micro_over_captions():
    captions = ["Two dogs and a cat on a couch.", "People eating a hot dog.", "A clock."]
    objects = [["dog", "couch"], ["person", "hot dog", "pizza"], []]
    r = chair(captions, objects)
    assert r["chair_s"] == pytest.approx(2 / 3)
    assert r["chair_i"] == pytest.approx(2 / 6)
    assert r["recall"] == pytest.approx(4 / 5)
    assert r["per_caption"][1]["mentioned"] == ["person", "hot dog"]  # "hot dog" is no dog; people -> person


@pytest.mark.parametrize("caption, mentioned", [
    ("A man eating a hot dog.", ["person", "hot dog"]),
    ("Two teddy bears and three women.", ["teddy bear", "person"]),
    ("Children with knives and mice.", ["person", "knife", "mouse"]),
    ("A baby bird near two traffic lights.", ["bird", "traffic light"]),
    ("The seat of the toilet is up.", ["toilet"]),  # a toilet's seat is no chair
    ("A man in a bow tie at home plate.", ["person", "tie"]),
    ("Buses, benches and puppies.", ["bus", "bench", "dog"]),
    ("Tennis rackets and a dining table.", ["tennis racket", "dining table"]),
])
def test_chair_coco_words(caption, mentioned):
    truth = [mentioned[0]]
    assert chair([caption], [truth])["per_caption"][0]["mentioned"] == mentioned


def test_chair_custom_vocabulary():
    r = chair(["Two red circles, a disc and a blue star."], [["circle"]],
              vocabulary={"circle": "circle", "disc": "circle", "star": "star", "square": "square"})
    assert r["per_caption"][0]["mentioned"] == ["circle", "circle", "star"]
    assert (r["chair_s"], r["chair_i"], r["recall"]) == (1.0, pytest.approx(1 / 3), 1.0)
    r = chair(["crosses and a ring"], [["cross", "ring"]], vocabulary=["cross", "ring"])
    assert r["chair_i"] == 0.0 and r["recall"] == 1.0


def test_chair_bad_input():
    assert len(CATEGORIES) == 80
    with pytest.raises(ValueError, match=r"objects\[0\].*'dgo'.*did you mean 'dog'"):
        chair(["a dog"], [["dgo"]])
    with pytest.raises(ValueError, match="2 captions but 1"):
        chair(["a dog", "a cat"], [["dog"]])
    with pytest.raises(ValueError, match="no captions"):
        chair([], [])
    with pytest.raises(TypeError):
        chair("a dog", [["dog"]])
