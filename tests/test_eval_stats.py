"""McNemar's exact test and the paired bootstrap on hand-computed cases; record file repair."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vasink.eval.records import RecordWriter, read_records
from vasink.stats import mcnemar_exact, paired_bootstrap


def test_mcnemar_exact_by_hand():
    # b = 1 (right only in base), c = 5: p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14 / 64
    base = [True, False, False, False, False, False, True]
    other = [False, True, True, True, True, True, True]
    assert mcnemar_exact(base, other) == (1, 5, pytest.approx(14 / 64))
    assert mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)  # no discordant pair
    assert mcnemar_exact([True] * 3, [False] * 3)[2] == pytest.approx(0.25)  # 2 * 1/8
    assert mcnemar_exact([True, False], [False, True])[2] == 1.0  # capped at 1


def accuracy(stats):
    return {"accuracy": stats["correct"].mean(-1)}


def test_paired_bootstrap_is_zero_width_for_identical_arms_and_covers_a_shift():
    rng = np.random.default_rng(1)
    base = {"correct": (rng.random(400) < 0.6).astype(float)}
    assert paired_bootstrap(accuracy, base, base, resamples=200)["accuracy"] == (0.0, 0.0)
    other = {"correct": base["correct"].copy()}
    flip = np.flatnonzero(other["correct"] == 0)[:40]
    other["correct"][flip] = 1.0  # +0.1 on every resample that keeps the same units
    low, high = paired_bootstrap(accuracy, base, other, resamples=500)["accuracy"]
    assert low < 0.1 < high and low > 0.05 and high < 0.15
    again = paired_bootstrap(accuracy, base, other, resamples=500)["accuracy"]
    assert again == (low, high)  # seeded
    chunked = paired_bootstrap(accuracy, base, other, resamples=500, max_elements=400 * 7)["accuracy"]
    assert chunked == (low, high)  # drawn 7 resamples at a time from the same stream: the same interval


def test_paired_bootstrap_level_sets_the_percentiles():
    """A 90% interval is the 5th-95th percentile of the resampled deltas, a 95% one the 2.5th-97.5th."""
    rng = np.random.default_rng(3)
    base = {"correct": (rng.random(300) < 0.5).astype(float)}
    other = {"correct": (rng.random(300) < 0.6).astype(float)}
    index = np.random.default_rng(0).integers(0, 300, size=(400, 300))  # the stream paired_bootstrap draws (seed 0)
    delta = other["correct"][index].mean(-1) - base["correct"][index].mean(-1)
    ci90 = paired_bootstrap(accuracy, base, other, resamples=400, level=0.90)["accuracy"]
    ci95 = paired_bootstrap(accuracy, base, other, resamples=400, level=0.95)["accuracy"]
    assert ci90 == pytest.approx(tuple(np.percentile(delta, [5, 95])))
    assert ci95 == pytest.approx(tuple(np.percentile(delta, [2.5, 97.5])))
    assert ci95[0] < ci90[0] < ci90[1] < ci95[1]  # the 90% interval lies strictly inside the 95% one


def test_record_writer_cuts_a_partial_line_and_readers_skip_it(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "ar')
    assert [r["id"] for r in read_records(tmp_path)] == ["a"]
    with RecordWriter(path) as writer:
        writer.write_batch([{"id": "c"}])
    assert [r["id"] for r in read_records(tmp_path)] == ["a", "c"]
    assert path.read_text().count("\n") == 2


def test_the_shipped_model_takes_its_statistics_from_below_the_harness():
    """organism/ (the shipped model and its measurement) imports nothing from eval/: the statistics both use
    live in vasink.stats; vasink.eval.stats still names them for older imports."""
    import ast
    from pathlib import Path

    import vasink
    import vasink.eval.stats
    import vasink.stats

    package = Path(vasink.__file__).parent
    for path in sorted((package / "organism").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not (name.startswith("vasink.eval") or name.lstrip(".").startswith("eval")), \
                    f"{path.relative_to(package)}:{node.lineno} imports {name}"
    assert vasink.eval.stats.paired_bootstrap is vasink.stats.paired_bootstrap
