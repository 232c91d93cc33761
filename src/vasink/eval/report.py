"""``vasink report DIR``: merge every record file of a run and write report.md, report.json, report.png.

Per metric and per subset (and overall): base | arm | delta | paired bootstrap 95% CI of the delta |
exact McNemar p (for the metric that is the mean of per-sample right/wrong). Then the answers that
changed between the arms, with their images' ids.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from . import records as recmod
from .registry import Benchmark, get_benchmark
from .stats import mcnemar_exact, paired_bootstrap

OVERALL = "overall"
MAX_CHANGED_LISTED = 200


def unit_arrays(bench: Benchmark, records: Sequence[Mapping], units: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-unit stats as arrays in ``units`` order (missing stats are 0)."""
    grouped: dict[str, list] = defaultdict(list)
    for record in records:
        grouped[bench.unit_of(record)].append(record)
    rows = [bench.unit_stats(grouped[u]) for u in units]
    keys = sorted({k for row in rows for k in row})
    return {k: np.array([row.get(k, 0.0) for row in rows], dtype=float) for k in keys}


def _floats(metrics: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def scopes_of(records: Sequence[Mapping]) -> list[str]:
    subsets = sorted({r["subset"] for r in records if r.get("subset")})
    return [OVERALL] + (subsets if len(subsets) > 1 else [])


def arm_metrics(bench: Benchmark, records: Sequence[Mapping]) -> dict[str, dict[str, float]]:
    """Metrics of one arm per scope (overall and each subset)."""
    out = {}
    for scope in scopes_of(records):
        chosen = [r for r in records if scope == OVERALL or r["subset"] == scope]
        units = sorted({bench.unit_of(r) for r in chosen})
        out[scope] = _floats(bench.metrics(unit_arrays(bench, chosen, units)))
        out[scope]["n"] = float(len(chosen))
    return out


def compare(bench: Benchmark, base: Mapping[str, dict], other: Mapping[str, dict], resamples: int = 1000,
            seed: int = 0) -> dict:
    """Paired comparison of two arms (records by id) over the ids both have."""
    ids = sorted(set(base) & set(other))
    result = {"n_paired": len(ids), "scopes": {}}
    paired_base = [base[i] for i in ids]
    for scope in scopes_of(paired_base):
        scope_ids = [i for i in ids if scope == OVERALL or base[i]["subset"] == scope]
        b_records, o_records = [base[i] for i in scope_ids], [other[i] for i in scope_ids]
        units = sorted({bench.unit_of(r) for r in b_records})
        b_stats, o_stats = unit_arrays(bench, b_records, units), unit_arrays(bench, o_records, units)
        for key in set(b_stats) | set(o_stats):  # a stat seen in one arm only is 0 in the other
            b_stats.setdefault(key, np.zeros(len(units)))
            o_stats.setdefault(key, np.zeros(len(units)))
        b_metrics, o_metrics = _floats(bench.metrics(b_stats)), _floats(bench.metrics(o_stats))
        intervals = paired_bootstrap(bench.metrics, b_stats, o_stats, resamples=resamples, seed=seed)
        rows = {}
        for name in b_metrics:
            row = {"base": b_metrics[name], "arm": o_metrics[name], "delta": o_metrics[name] - b_metrics[name],
                   "ci95": list(intervals.get(name, (math.nan, math.nan))), "mcnemar_p": None,
                   "lower_is_better": bench.higher_is_better.get(name) is False}
            if name == bench.correct_metric and all(r["correct"] is not None for r in b_records + o_records):
                b_count, c_count, p = mcnemar_exact([r["correct"] for r in b_records],
                                                    [r["correct"] for r in o_records])
                row.update(mcnemar_p=p, only_base_right=b_count, only_arm_right=c_count)
            rows[name] = row
        result["scopes"][scope] = {"n": len(scope_ids), "metrics": rows}
    result["changed"] = changed_answers(base, other, ids)
    return result


def changed_answers(base: Mapping[str, dict], other: Mapping[str, dict], ids: Sequence[str]) -> list[dict]:
    out = []
    for i in ids:
        b, o = base[i], other[i]
        if _answer_key(b) != _answer_key(o):
            out.append({"id": i, "image_id": b.get("image_id", ""), "subset": b.get("subset", ""),
                        "question": b.get("question", ""), "target": b.get("target"), "base": b["raw"], "arm": o["raw"],
                        "base_correct": b.get("correct"), "arm_correct": o.get("correct")})
    return out


def _answer_key(record):
    parsed = record.get("parsed")
    return json.dumps(parsed, sort_keys=True) if parsed is not None else record.get("raw")


def load_run(out: Path) -> tuple[dict, Benchmark, dict[str, dict[str, dict]]]:
    """(run.json, benchmark, {arm: {id: record}}) of an output folder; records of stale configs are ignored."""
    run = recmod.read_run(out)
    bench = get_benchmark(run["run"]["benchmark"])
    hashes = {arm: info["config_hash"] for arm, info in run["arms"].items()}
    by_arm: dict[str, dict[str, dict]] = {arm: {} for arm in hashes}
    for record in recmod.read_records(out):
        arm = record.get("arm")
        if arm in hashes and record.get("config_hash") == hashes[arm]:
            by_arm[arm].setdefault(record["id"], record)
    return run, bench, by_arm


def build_report(out: str | Path, resamples: int = 1000, seed: int = 0, write: bool = True) -> dict:
    out = Path(out)
    if resamples < 1:
        raise ValueError(f"--resamples must be at least 1 (bootstrap resamples of the 95% CI), got {resamples}")
    run, bench, by_arm = load_run(out)
    if not any(by_arm.values()):
        raise ValueError(f"{out}: no records yet")
    report = {"run": run["run"], "arms": {a: run["arms"][a]["config"] for a in by_arm},
              "benchmark": {"description": bench.description, "comparability": bench.comparability},
              "metrics": {arm: arm_metrics(bench, list(recs.values())) for arm, recs in by_arm.items() if recs},
              "comparisons": {}}
    if by_arm.get("base"):
        for arm, recs in by_arm.items():
            if arm != "base" and recs:
                report["comparisons"][arm] = compare(bench, by_arm["base"], recs, resamples, seed)
    if write:
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default))
        (out / "report.md").write_text(render_markdown(report))
        plot(report, out / "report.png")
    return report


def _json_default(value):
    return float(value) if hasattr(value, "item") else str(value)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) >= 10 else f"{value:.{digits}f}"


def _fmt_p(p) -> str:
    return "-" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")


def render_markdown(report: dict) -> str:
    run = report["run"]
    lines = [f"# {run['benchmark']}" + (f":{run['subset']}" if run.get("subset") else "") + f" on {run['model']}",
             "", f"data: `{run['data']}`, greedy decoding, max_new_tokens {run['max_new_tokens']}", ""]
    about = report.get("benchmark", {})
    lines += [f"{about[key]}\n" for key in ("description", "comparability") if about.get(key)]
    for arm, config in report["arms"].items():
        summary = "VAR off" if config is None else ", ".join(
            f"{k}={config[k]}" for k in ("rho", "p", "tau", "sink_dims", "compat") if k in config)
        lines.append(f"- arm `{arm}`: {summary}")
    if not report["comparisons"]:
        for arm, scopes in report["metrics"].items():
            lines += ["", f"## {arm}", "", "| scope | metric | value |", "| --- | --- | --- |"]
            for scope, metrics in scopes.items():
                lines += [f"| {scope} | {name} | {_fmt(value)} |" for name, value in metrics.items()
                          if not math.isnan(value)]
    for arm, comparison in report["comparisons"].items():
        lines += ["", f"## base vs {arm} ({comparison['n_paired']} paired samples)", "",
                  f"| scope | metric | base | {arm} | delta | 95% CI (paired bootstrap) | McNemar p |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for scope, block in comparison["scopes"].items():
            for name, row in block["metrics"].items():
                if math.isnan(row["base"]) and math.isnan(row["arm"]):
                    continue  # a metric this subset cannot have (CV-Bench's 3D score on the 2D subset)
                arrow = " (lower is better)" if row["lower_is_better"] else ""
                lines.append(f"| {scope} (n={block['n']}) | {name}{arrow} | {_fmt(row['base'])} | {_fmt(row['arm'])} | "
                             f"{_fmt(row['delta'])} | [{_fmt(row['ci95'][0])}, {_fmt(row['ci95'][1])}] | "
                             f"{_fmt_p(row['mcnemar_p'])} |")
        changed = comparison["changed"]
        lines += ["", f"### answers that changed ({len(changed)})", ""]
        if changed:
            lines += ["| id | image | question | truth | base | " + arm + " |", "| --- | --- | --- | --- | --- | --- |"]
            for c in changed[:MAX_CHANGED_LISTED]:
                cells = [c["id"], c["image_id"], c["question"], json.dumps(c["target"]), c["base"], c["arm"]]
                cells = [str(x).replace("|", "\\|").replace("\n", " ")[:80] for x in cells]
                lines.append("| " + " | ".join(cells) + " |")
            if len(changed) > MAX_CHANGED_LISTED:
                lines.append(f"\n... {len(changed) - MAX_CHANGED_LISTED} more in report.json")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report["metrics"]
    arms = list(metrics)
    names = [n for n in next(iter(metrics.values()))[OVERALL] if n != "n"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) * len(arms) ** 0.5 + 2), 3.2))
    width = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        values = [metrics[arm][OVERALL].get(n, math.nan) for n in names]
        errors = None
        if arm in report["comparisons"]:
            rows = report["comparisons"][arm]["scopes"][OVERALL]["metrics"]
            # the delta's CI, drawn around the arm's value
            errors = np.array([[max(0.0, -(rows[n]["ci95"][0] - rows[n]["delta"])) if n in rows else 0 for n in names],
                               [max(0.0, rows[n]["ci95"][1] - rows[n]["delta"]) if n in rows else 0 for n in names]])
            errors = np.nan_to_num(errors)
        ax.bar(np.arange(len(names)) + k * width, values, width, label=arm, yerr=errors, capsize=3)
    ax.set_xticks(np.arange(len(names)) + width * (len(arms) - 1) / 2, names, rotation=30, ha="right")
    ax.set_title(f"{report['run']['benchmark']} on {report['run']['model']} (error bars: 95% CI of the delta)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
