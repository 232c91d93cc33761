"""``vasink score``: score an answers file made elsewhere (e.g. by LLaVA's eval scripts).

Answers are JSONL: LLaVA's format (``question_id``, ``text``) or vasink's records (``id``, ``raw``). Each
answer is matched to the benchmark's sample with that id, or with that dataset question id.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import DatasetRowError
from .registry import get_benchmark, parse_bench
from .report import arm_metrics
from .runner import make_record


def read_answers(path: Path) -> list[tuple[str, str]]:
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetRowError(f"{path}: row {i}: not valid JSON ({error.msg})") from None
        key = next((k for k in ("question_id", "id") if k in row), None)
        text = next((row[k] for k in ("text", "raw", "answer", "prediction") if k in row), None)
        if key is None or not isinstance(text, str):
            raise DatasetRowError(f"{path}: row {i}: field 'question_id' (or 'id') and a text field 'text' "
                                  f"(or 'raw', 'answer', 'prediction') are needed")
        out.append((str(row[key]), text))
    return out


def score_answers(bench_spec: str, answers: str | Path, data: str | None = None, images: str | None = None) -> dict:
    name, subset = parse_bench(bench_spec)
    bench = get_benchmark(name)
    bench.judge_check()
    samples = bench.load(data, subset, None, images)
    by_id = {s.id: s for s in samples}
    by_source: dict[str, list] = {}
    for s in samples:  # dataset question ids inside vasink's ids ("random-123" -> "123")
        by_source.setdefault(s.id.rsplit("-", 1)[-1].split("/")[-1], []).append(s)
    records, unknown = [], []
    for key, text in read_answers(Path(answers)):
        sample = by_id.get(key) or (by_source[key][0] if len(by_source.get(key, [])) == 1 else None)
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
