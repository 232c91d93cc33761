"""Scoring and statistics on asymmetric fixtures (issue 22, "What the tests missed"): unequal POPE cells, an
MMVP pair half right, hedged and sentence-opening multiple-choice answers, bootstraps with NaN resamples.

Every expected value is worked out by hand in the test, so a swapped cell or a dropped guard changes it.
"""

import math

import numpy as np
import pytest

from vasink.scoring import mmvp_pair_accuracy, option_letter, pope_metrics
from vasink.stats import paired_bootstrap

# -- POPE: a confusion matrix whose four cells all differ --------------------------------------------------------

# tp = 3, fp = 1, fn = 2, tn = 4 (so any swap of two cells changes some metric)
POPE_LABELS = ["yes"] * 3 + ["no"] * 1 + ["yes"] * 2 + ["no"] * 4
POPE_ANSWERS = (["Yes, there is."] * 3 + ["Yes."] + ["No, there is not."] * 2
                + ["No.", "There is no cat.", "Not really.", "no"])


def test_pope_metrics_on_unequal_cells():
    got = pope_metrics(POPE_ANSWERS, POPE_LABELS)
    precision, recall = 3 / 4, 3 / 5
    assert got["accuracy"] == pytest.approx(7 / 10)
    assert got["precision"] == pytest.approx(precision)
    assert got["recall"] == pytest.approx(recall)
    assert got["f1"] == pytest.approx(2 * precision * recall / (precision + recall))  # 2/3
    assert got["yes_ratio"] == pytest.approx(4 / 10)


def test_pope_benchmark_metrics_on_unequal_cells():
    """The harness' per-resample metrics (stats summed over the last axis) give the same numbers."""
    from vasink.eval.benchmarks.pope import PopeScoring

    scoring = PopeScoring()
    stats = [scoring.score(label, answer, {}).stats for answer, label in zip(POPE_ANSWERS, POPE_LABELS)]
    arrays = {k: np.array([[s[k] for s in stats]]) for k in stats[0]}  # (1 resample, units)
    got = {k: float(v[0]) for k, v in scoring.metrics(arrays).items()}
    assert got == pytest.approx({"accuracy": 0.7, "precision": 0.75, "recall": 0.6, "f1": 2 / 3, "yes_ratio": 0.4})


# -- MMVP: a pair counts only if both of its questions are right -------------------------------------------------


@pytest.mark.parametrize("correct, want", [
    ([True, False, True, True], 0.5),  # first pair half right
    ([False, True, True, True], 0.5),  # the other half
    ([True, False, False, True], 0.0),  # each pair half right
    ([True, True, False, False, True, False], 1 / 3),
])
def test_mmvp_pair_accuracy_with_pairs_half_right(correct, want):
    assert mmvp_pair_accuracy(correct) == pytest.approx(want)


def test_mmvp_benchmark_counts_a_half_right_pair_as_wrong():
    from vasink.eval.registry import get_benchmark

    mmvp = get_benchmark("mmvp")
    stats = [mmvp.unit_stats([{"stats": {"correct": a, "n": 1.0}}, {"stats": {"correct": b, "n": 1.0}}])
             for a, b in ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0))]
    arrays = {k: np.array([[s[k] for s in stats]]) for k in stats[0]}
    got = mmvp.metrics(arrays)
    assert float(got["pair_accuracy"][0]) == pytest.approx(1 / 3)
    assert float(got["accuracy"][0]) == pytest.approx(4 / 6)


# -- multiple choice: hedges and sentences that open with an option letter ---------------------------------------

OPEN_CLOSED = ["Open", "Closed"]


@pytest.mark.parametrize("answer", ["open or closed", "Open or closed.", "It could be open or closed",
                                    "either open or closed, hard to say"])
def test_a_hedged_answer_picks_no_option(answer):
    assert option_letter(answer, "AB", choices=OPEN_CLOSED) is None


@pytest.mark.parametrize("answer, want", [
    ("A butterfly's wings are closed.", "B"),  # "A" is the article; the choice text decides
    ("A door that is open.", "A"),
    ("I think the wings are closed.", "B"),  # "I" the pronoun, not an option
    ("B is the answer.", "B"),
    ("A. Open", "A"),
    ("A", "A"),
])
def test_a_sentence_that_opens_with_an_option_letter(answer, want):
    assert option_letter(answer, "ABI", choices=OPEN_CLOSED) == want


def test_sentence_opening_article_alone_is_not_an_option():
    assert option_letter("A dog sits on the left.", "AB") is None


# -- bootstrap: resamples whose metric is NaN ----------------------------------------------------------------------


def _flagged_mean(d):
    flagged = d["flag"].sum(-1)
    return {"mean": (d["flag"] * d["score"]).sum(-1) / np.where(flagged > 0, flagged, np.nan)}  # NaN: none flagged


@pytest.mark.parametrize("max_elements", [1 << 22, 8 * 7])  # one chunk; chunks of 7 resamples (one RNG stream)
def test_paired_bootstrap_drops_nan_resamples_and_keeps_the_rest(max_elements):
    """A mean over flagged units, few of them flagged: some resamples hold none and their metric is NaN. The
    interval is the percentile interval of the finite deltas, replayed here from the same generator."""
    score = np.array([0.9, 0.1, 0.35, 0.72, 0.05, 0.6, 0.27, 0.44])
    base = {"flag": np.array([1, 0, 0, 0, 1, 0, 0, 0], float), "score": score}
    other = {"flag": np.array([1, 1, 0, 0, 0, 0, 1, 0], float), "score": score + 0.1 * np.arange(8) / 8}
    resamples, seed, n = 400, 3, 8
    got = paired_bootstrap(_flagged_mean, base, other, resamples=resamples, seed=seed, level=0.9,
                           max_elements=max_elements)

    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    deltas = []
    for row in index:
        means = []
        for arm in (base, other):
            flagged = [j for j in row if arm["flag"][j]]
            means.append(sum(arm["score"][j] for j in flagged) / len(flagged) if flagged else math.nan)
        if all(math.isfinite(m) for m in means):  # a NaN metric: no delta
            deltas.append(means[1] - means[0])
    assert 0 < len(deltas) < resamples, "the fixture must give some NaN resamples and some finite ones"
    want = (float(np.percentile(deltas, 5)), float(np.percentile(deltas, 95)))
    assert got["mean"] == pytest.approx(want)
    assert all(math.isfinite(x) for x in got["mean"])


def test_paired_bootstrap_all_nan_gives_nan_interval():
    never = {"flag": np.zeros(4), "score": np.ones(4)}
    got = paired_bootstrap(_flagged_mean, never, never, resamples=50, level=[0.9, 0.95])
    assert all(math.isnan(x) for interval in got["mean"] for x in interval)
