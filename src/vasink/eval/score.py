"""``vasink score``: score an answers file made elsewhere (e.g. by LLaVA's eval scripts).

Answers are JSONL: LLaVA's format (``question_id``, ``text``) or vasink's records (``id``, ``raw``). Each
answer is matched to the benchmark's sample with that id, or with the dataset's own question id
(``Benchmark.answer_key``: MME adds the question, MMBench the round).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .data import DatasetRowError
from .registry import get_benchmark, parse_bench
from .report import arm_metrics
from .runner import make_record


def read_answers(path: Path) -> list[tuple[dict, str]]:
    """(answer line, answer text) per line of a JSONL answers file."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetRowError(f"{path}: row {i}: not valid JSON ({error.msg})") from None
        text = next((row[k] for k in ("text", "raw", "answer", "prediction") if k in row), None)
        if not ("question_id" in row or "id" in row) or not isinstance(text, str):
            raise DatasetRowError(f"{path}: row {i}: field 'question_id' (or 'id') and a text field 'text' "
                                  f"(or 'raw', 'answer', 'prediction') are needed")
        out.append((row, text))
    return out


def score_answers(bench_spec: str, answers: str | Path, data: str | None = None, images: str | None = None) -> dict:
    name, subset = parse_bench(bench_spec)
    bench = get_benchmark(name)
    bench.judge_check()
    samples = bench.load(data, subset, None, images)
    source_counts = Counter(s.source_id for s in samples if s.source_id)
    by_key = {s.source_id: s for s in samples if s.source_id and source_counts[s.source_id] == 1}
    by_key.update({s.id: s for s in samples})
    records, unknown = [], []
    for row, text in read_answers(Path(answers)):
        key = bench.answer_key(row)
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
    return {"benchmark": name, "subset": subset, "answers": str(answers), "n": len(records),
            "missing": len(samples) - len(records), "metrics": arm_metrics(bench, records)}
