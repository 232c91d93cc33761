"""``vasink score``: score an answers file made elsewhere (e.g. by LLaVA's eval scripts).

Answers are JSONL: LLaVA's format (``question_id``, ``text``) or vasink's records (``id``, ``raw``). Each
answer is matched to the benchmark's sample with that id, or with the dataset's own question id
(``Benchmark.answer_key``: MME adds the question; MMBench leaves out LLaVA's extra rounds, ``round_id`` > 0,
which are counted as ``skipped``).

A vasink records file holds one line per (sample, arm): one arm is scored (``arm=``, ``--arm``); a file with
several arms and no arm chosen is refused, and so is an id answered twice, so no sample counts twice.

``vasink score --run RUN`` re-scores a ``vasink eval`` run (its raw answers through today's scorer): RUN is the
run's folder, as ``vasink report`` takes it, or its name under ``vasink-eval/``, where ``vasink eval`` writes
without ``--out`` (``vasink-eval/<bench>``, ``:`` written ``-``). The benchmark, subset and data come from its
``run.json``; a sampled arm with several runs is scored on its first (``vasink report`` pools them).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .data import DatasetRowError, jsonl_records
from .records import RUN_FILE
from .registry import get_benchmark, parse_bench
from .report import arm_metrics, load_run
from .runner import make_record

RUNS_ROOT = Path("vasink-eval")  # where vasink eval writes a run without --out (EvalSettings.output_dir)


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
    rows = select_arm(read_answers(Path(answers)), arm, answers)
    result = _score_rows(bench, subset, rows, answers, data, images)
    return {"benchmark": name, "subset": subset, "answers": str(answers), "arm": arm, **result}


def known_runs(root: Path = RUNS_ROOT) -> list[str]:
    """Names of the run folders under ``root`` (those holding a run.json)."""
    return sorted(p.name for p in root.iterdir() if (p / RUN_FILE).is_file()) if root.is_dir() else []


def find_run(spec: str, root: Path = RUNS_ROOT) -> Path:
    """The folder of run ``spec``: a folder holding a run.json, or ``root / spec`` (``:`` written ``-``)."""
    for folder in (Path(spec), root / spec.replace(":", "-")):
        if (folder / RUN_FILE).is_file():
            return folder
    runs = known_runs(root)
    listing = f"runs in {root}/: {', '.join(runs)}" if runs else \
        f"no runs in {root.resolve()}/ (vasink eval --bench NAME writes {root}/NAME)"
    raise FileNotFoundError(f"--run {spec}: no such run (neither {spec} nor {root / spec.replace(':', '-')} holds a "
                            f"{RUN_FILE}); {listing}; or pass a run's folder, as vasink eval --out wrote it")


def score_run(spec: str, arm: str | None = None, data: str | None = None, images: str | None = None,
              bench: str | None = None) -> dict:
    """Scores of one arm of a ``vasink eval`` run, found by :func:`find_run`; ``data``: overrides run.json's;
    ``bench``: when given, the run's benchmark must be this one."""
    out = find_run(spec)
    run, benchmark, by_arm = load_run(out)
    if bench is not None and parse_bench(bench) != (benchmark.name, run["run"].get("subset")):
        raise ValueError(f"--bench {bench}: run {out} is of benchmark {benchmark.name} (subset "
                         f"{run['run'].get('subset') or 'all'}); leave --bench out with --run")
    arms = sorted(a for a, runs in by_arm.items() if runs and runs[0])
    if arm is None and len(arms) > 1:
        raise ValueError(f"run {out} holds the answers of {len(arms)} arms ({', '.join(arms)}): choose one with "
                         f"--arm, e.g. --arm {arms[-1]}")
    if arm is not None and arm not in arms:
        raise ValueError(f"--arm {arm}: run {out} has no answers of arm {arm!r} (its arms: "
                         f"{', '.join(arms) or 'none yet'})")
    if not arms:
        raise ValueError(f"run {out}: no records yet")
    arm = arm or arms[0]
    stored = run["run"].get("data")
    data = data or (None if stored in (None, "built-in", benchmark.default_data) else stored)
    rows = [(record, record["raw"]) for record in by_arm[arm][0].values()]
    result = _score_rows(benchmark, run["run"].get("subset"), rows, out, data, images)
    return {"benchmark": benchmark.name, "subset": run["run"].get("subset"), "run": str(out), "arm": arm,
            "sampled_runs": len(by_arm[arm]), **result}


def _score_rows(bench, subset, rows: list[tuple[dict, str]], source, data, images) -> dict:
    """n, skipped, missing and metrics of answer ``rows`` (answer line, text) against ``bench``'s samples."""
    name = bench.name
    bench.judge_check()
    samples = bench.load(data, subset, None, images)
    source_counts = Counter(s.source_id for s in samples if s.source_id)
    by_key = {s.source_id: s for s in samples if s.source_id and source_counts[s.source_id] == 1}
    by_key.update({s.id: s for s in samples})
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
        raise ValueError(f"{source}: {len(unknown)} answer id(s) match no {name} sample (or several): "
                         f"{', '.join(unknown[:10])}")
    if not records:
        raise ValueError(f"{source}: no answers")
    _refuse_duplicates([r["id"] for r in records], source)
    return {"n": len(records), "skipped": skipped, "missing": len(samples) - len(records),
            "metrics": arm_metrics(bench, records)}
