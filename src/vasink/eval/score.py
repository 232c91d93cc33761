"""``vasink score``: score an answers file made elsewhere (e.g. by LLaVA's eval scripts).

Answers are JSONL: LLaVA's format (``question_id``, ``text``) or vasink's records (``id``, ``raw``). Each
answer is matched to the benchmark's sample with that id, or with the dataset's own question id
(``Benchmark.answer_key``: MME adds the question; MMBench leaves out LLaVA's extra rounds, ``round_id`` > 0,
which are counted as ``skipped``).

A vasink records file holds one line per (sample, arm): one arm is scored (``arm=``, ``--arm``); a file with
several arms and no arm chosen is refused, and so is an id answered twice, so no sample counts twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .data import DatasetRowError, jsonl_records
from .registry import get_benchmark, parse_bench
from .report import arm_metrics
from .runner import make_record


def read_answers(path: Path) -> list[tuple[dict, str]]:
    """(answer line, answer text) per line of a JSONL answers file."""
    out = []
    for i, row in jsonl_records(Path(path)):  # i: the line number, from 1
        text = next((row[k] for k in ("text", "raw", "answer", "prediction") if k in row), None) \
            if isinstance(row, dict) else None
        if not isinstance(text, str) or not ("question_id" in row or "id" in row):
            raise DatasetRowError(f"{path}: line {i}: field 'question_id' (or 'id') and a text field 'text' "
                                  f"(or 'raw', 'answer', 'prediction') are needed")
        out.append((row, text))
    return out


def select_arm(rows: list[tuple[dict, str]], arm: str | None, path) -> list[tuple[dict, str]]:
    """The answers of one arm of a vasink records file (rows without ``arm``: LLaVA's answers, kept as they are)."""
    arms = sorted({str(row["arm"]) for row, _ in rows if "arm" in row})
    if arm is not None:
        if arm not in arms:
            found = f"its arms: {', '.join(arms)}" if arms else "it has no 'arm' field (not a vasink records file)"
            raise ValueError(f"--arm {arm}: {path} has no answers of arm {arm!r} ({found})")
        return [(row, text) for row, text in rows if str(row.get("arm")) == arm]
    if len(arms) > 1:
        raise ValueError(f"{path} holds the answers of {len(arms)} arms ({', '.join(arms)}): "
                         f"choose one with --arm, e.g. --arm {arms[-1]}")
    return rows


def _refuse_duplicates(keys: list[str], path) -> None:
    repeated = sorted(k for k, n in Counter(keys).items() if n > 1)
    if repeated:
        raise ValueError(f"{path}: {len(repeated)} answer id(s) appear more than once, e.g. {repeated[0]!r} "
                         f"(each sample is scored once)")


def score_answers(bench_spec: str, answers: str | Path, data: str | None = None, images: str | None = None,
                  arm: str | None = None) -> dict:
    """Scores of one answers file; ``arm``: the arm to score in a vasink records file with several."""
    name, subset = parse_bench(bench_spec)
    bench = get_benchmark(name)
    bench.judge_check()
    samples = bench.load(data, subset, None, images)
    source_counts = Counter(s.source_id for s in samples if s.source_id)
    by_key = {s.source_id: s for s in samples if s.source_id and source_counts[s.source_id] == 1}
    by_key.update({s.id: s for s in samples})
    rows = select_arm(read_answers(Path(answers)), arm, answers)
    records, unknown, skipped = [], [], 0
    for row, text in rows:
        key = bench.answer_key(row)
        if key is None:  # an answer the benchmark's rule leaves out
            skipped += 1
            continue
        sample = by_key.get(key)
        if sample is None:
            unknown.append(key)
            continue
        records.append(make_record(bench, sample, "answers", text, ""))
    if unknown:
        raise ValueError(f"{answers}: {len(unknown)} answer id(s) match no {name} sample (or several): "
                         f"{', '.join(unknown[:10])}")
    if not records:
        raise ValueError(f"{answers}: no answers")
    _refuse_duplicates([r["id"] for r in records], answers)
    return {"benchmark": name, "subset": subset, "answers": str(answers), "arm": arm, "n": len(records),
            "skipped": skipped, "missing": len(samples) - len(records), "metrics": arm_metrics(bench, records)}
