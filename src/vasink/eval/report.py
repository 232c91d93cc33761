"""``vasink report DIR``: merge every record file of a run and write report.md, report.json, report.png.

Every arm against base, then every pair of the other arms (``var vs pai``: the delta is pai - var). Per
metric and per subset (and overall): reference | arm | delta | paired bootstrap CI of the delta | exact
McNemar p (for the metric that is the mean of per-sample right/wrong) and its Holm-adjusted p. Then the
answers that changed against base, with their images' ids.

Several comparisons: with K of them, McNemar p-values are adjusted with Holm's step-down method over the K
comparisons (per scope and metric), and the intervals are drawn at level 1 - 0.05/K (Bonferroni), so the K
intervals of a metric hold together at 95%; ``ci95`` in report.json keeps each one's own 95% interval.
A sampled arm with several runs pools them: each unit's stats are averaged over the runs (so the interval
includes the sampling noise); McNemar and the changed answers read run 0.
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
from .stats import holm, mcnemar_exact, paired_bootstrap

OVERALL = "overall"
MAX_CHANGED_LISTED = 200


Runs = list  # one {sample id: record} per run of an arm (a greedy arm has one)


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


def pooled_arrays(bench: Benchmark, runs: Runs, ids: Sequence[str], units: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-unit stats of ``ids``, averaged over the runs (each run holds every id)."""
    per_run = [unit_arrays(bench, [run[i] for i in ids], units) for run in runs]
    keys = sorted({k for stats in per_run for k in stats})
    return {k: np.mean([stats.get(k, np.zeros(len(units))) for stats in per_run], axis=0) for k in keys}


def pooled_metrics(bench: Benchmark, runs: Runs) -> dict[str, dict[str, float]]:
    """:func:`arm_metrics` of an arm, its runs pooled (over the ids every run has)."""
    if len(runs) == 1:
        return arm_metrics(bench, list(runs[0].values()))
    ids = sorted(set.intersection(*(set(run) for run in runs)))
    out = {}
    for scope in scopes_of([runs[0][i] for i in ids]):
        chosen = [i for i in ids if scope == OVERALL or runs[0][i]["subset"] == scope]
        units = sorted({bench.unit_of(runs[0][i]) for i in chosen})
        out[scope] = {**_floats(bench.metrics(pooled_arrays(bench, runs, chosen, units))),
                      "n": float(len(chosen)), "runs": float(len(runs))}
    return out


def compare(bench: Benchmark, base: Runs | Mapping[str, dict], other: Runs | Mapping[str, dict],
            resamples: int = 1000, seed: int = 0, comparisons: int = 1) -> dict:
    """Paired comparison of two arms over the ids both have (in every run); ``base`` is the reference arm.
    ``comparisons``: how many the report makes (the interval's level is 1 - 0.05 / comparisons)."""
    base, other = _as_runs(base), _as_runs(other)
    ids = sorted(set.intersection(*(set(run) for run in base + other)))
    level = 1 - 0.05 / comparisons
    result = {"n_paired": len(ids), "ci_level": level, "runs": [len(base), len(other)], "scopes": {}}
    first_base, first_other = base[0], other[0]
    for scope in scopes_of([first_base[i] for i in ids]):
        scope_ids = [i for i in ids if scope == OVERALL or first_base[i]["subset"] == scope]
        b_records, o_records = [first_base[i] for i in scope_ids], [first_other[i] for i in scope_ids]
        units = sorted({bench.unit_of(r) for r in b_records})
        b_stats, o_stats = pooled_arrays(bench, base, scope_ids, units), pooled_arrays(bench, other, scope_ids, units)
        for key in set(b_stats) | set(o_stats):  # a stat seen in one arm only is 0 in the other
            b_stats.setdefault(key, np.zeros(len(units)))
            o_stats.setdefault(key, np.zeros(len(units)))
        b_metrics, o_metrics = _floats(bench.metrics(b_stats)), _floats(bench.metrics(o_stats))
        intervals = paired_bootstrap(bench.metrics, b_stats, o_stats, resamples=resamples, seed=seed,
                                     level=[0.95, level])
        rows = {}
        for name in b_metrics:
            ci95, ci = intervals.get(name, [(math.nan, math.nan)] * 2)
            row = {"base": b_metrics[name], "arm": o_metrics[name], "delta": o_metrics[name] - b_metrics[name],
                   "ci95": list(ci95), "ci": list(ci), "mcnemar_p": None,
                   "lower_is_better": bench.higher_is_better.get(name) is False}
            if name == bench.correct_metric and all(r["correct"] is not None for r in b_records + o_records):
                b_count, c_count, p = mcnemar_exact([r["correct"] for r in b_records],
                                                    [r["correct"] for r in o_records])
                row.update(mcnemar_p=p, mcnemar_p_holm=p, only_base_right=b_count, only_arm_right=c_count)
            rows[name] = row
        result["scopes"][scope] = {"n": len(scope_ids), "metrics": rows}
    result["changed"] = changed_answers(first_base, first_other, ids)
    return result


def _as_runs(arm) -> Runs:
    return list(arm) if isinstance(arm, (list, tuple)) else [arm]


def adjust_for_comparisons(comparisons: Sequence[dict]) -> None:
    """Holm-adjust the McNemar p-values of ``comparisons`` (in place), per scope and metric."""
    cells = defaultdict(list)  # (scope, metric) -> the rows of every comparison that has a p there
    for comparison in comparisons:
        for scope, block in comparison["scopes"].items():
            for name, row in block["metrics"].items():
                if row.get("mcnemar_p") is not None:
                    cells[(scope, name)].append(row)
    for rows in cells.values():
        for row, adjusted in zip(rows, holm([row["mcnemar_p"] for row in rows])):
            row["mcnemar_p_holm"] = adjusted


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


def load_run(out: Path) -> tuple[dict, Benchmark, dict[str, Runs]]:
    """(run.json, benchmark, {arm: [{id: record} per run]}) of an output folder; records of stale configs are
    ignored, and so are the runs of a sampled arm after the first one that is missing."""
    run = recmod.read_run(out)
    bench = get_benchmark(run["run"]["benchmark"])
    hashes = {arm: info["config_hash"] for arm, info in run["arms"].items()}
    by_arm: dict[str, dict[int, dict[str, dict]]] = {arm: defaultdict(dict) for arm in hashes}
    for record in recmod.read_records(out):
        arm = record.get("arm")
        if arm in hashes and record.get("config_hash") == hashes[arm]:
            by_arm[arm][record.get("run", 0)].setdefault(record["id"], record)
    runs: dict[str, Runs] = {}
    for arm, by_run in by_arm.items():
        count = next(k for k in range(len(by_run) + 1) if k not in by_run)
        runs[arm] = [by_run[k] for k in range(count)]
    return run, bench, runs


def build_report(out: str | Path, resamples: int = 1000, seed: int = 0, write: bool = True) -> dict:
    out = Path(out)
    if resamples < 1:
        raise ValueError(f"--resamples must be at least 1 (bootstrap resamples of the 95% CI), got {resamples}")
    run, bench, by_arm = load_run(out)
    by_arm = {arm: by_arm[arm] for arm in sorted(by_arm, key=_arm_order) if by_arm[arm] and by_arm[arm][0]}
    if not by_arm:
        raise ValueError(f"{out}: no records yet")
    report = {"run": run["run"], "arms": {a: run["arms"][a]["config"] for a in by_arm},
              "decodings": {a: run["arms"][a].get("decoding") for a in by_arm},
              "benchmark": {"description": bench.description,
                            "comparability": bench.comparability_for(run["run"].get("data"))},
              "metrics": {arm: pooled_metrics(bench, runs) for arm, runs in by_arm.items()},
              "comparisons": {}, "pairwise": {}}
    others = [arm for arm in by_arm if arm != "base"]
    pairs = [("base", arm) for arm in others if "base" in by_arm]
    pairs += [(a, b) for k, a in enumerate(others) for b in others[k + 1:]]
    for reference, arm in pairs:
        comparison = compare(bench, by_arm[reference], by_arm[arm], resamples, seed, comparisons=len(pairs))
        comparison["reference"] = reference
        if reference == "base":
            report["comparisons"][arm] = comparison
        else:
            report["pairwise"][f"{reference} vs {arm}"] = comparison
    adjust_for_comparisons([*report["comparisons"].values(), *report["pairwise"].values()])
    report["correction"] = {"comparisons": len(pairs), "p_values": "holm", "intervals": "bonferroni",
                            "ci_level": 1 - 0.05 / max(1, len(pairs))}
    if write:
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default))
        (out / "report.md").write_text(render_markdown(report))
        plot(report, out / "report.png")
    return report


def _arm_order(arm: str) -> tuple:
    """base, var, the peers as ``vasink eval --arms`` lists them, then the rest (sweep points) by name."""
    leading = ("base", "var", "pai", "vaf", "vcd")
    return (leading.index(arm), "") if arm in leading else (len(leading), arm)


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


def arm_summary(config: dict | None, decoding: dict | None) -> str:
    """One line for an arm: its method and config fields, and its decoding."""
    from .arms import Decoding

    if config is None:
        what = "the model as loaded"
    elif "method" not in config:  # a VAR arm
        what = "VAR " + ", ".join(f"{k}={config[k]}" for k in ("rho", "p", "tau", "sink_dims", "compat") if k in config)
    else:
        what = config["method"].upper() + " " + ", ".join(f"{k}={v}" for k, v in config.items() if k != "method")
    return f"{what}; {Decoding.from_payload(decoding).describe()}"


def render_markdown(report: dict) -> str:
    run = report["run"]
    decodings = report.get("decodings", {})
    policy = run.get("decoding", "greedy")
    policy_text = {"greedy": "greedy decoding for every arm", "sample": "every arm samples, at the same seeds",
                   "official": "each arm at its method's official decoding"}.get(policy, policy)
    lines = [f"# {run['benchmark']}" + (f":{run['subset']}" if run.get("subset") else "") + f" on {run['model']}",
             "", f"data: `{run['data']}`, {policy_text}, max_new_tokens {run['max_new_tokens']}", ""]
    about = report.get("benchmark", {})
    lines += [f"{about[key]}\n" for key in ("description", "comparability") if about.get(key)]
    for arm, config in report["arms"].items():
        lines.append(f"- arm `{arm}`: {arm_summary(config, decodings.get(arm))}")
    correction = report.get("correction", {})
    k = correction.get("comparisons", 1)
    level = correction.get("ci_level", 0.95)
    if k > 1:
        lines += ["", f"{k} comparisons: McNemar p-values are Holm-adjusted over the {k} (per scope and metric); "
                      f"intervals are at {100 * level:.4g}% (Bonferroni, 0.05/{k}), so a metric's {k} intervals hold "
                      f"together at 95%. Sampled arms with several runs pool them (McNemar reads run 0)."]
    ci_header = "95% CI (paired bootstrap)" if k <= 1 else f"{100 * level:.4g}% CI (paired bootstrap)"
    if not report["comparisons"] and not report.get("pairwise"):
        for arm, scopes in report["metrics"].items():
            lines += ["", f"## {arm}", "", "| scope | metric | value |", "| --- | --- | --- |"]
            for scope, metrics in scopes.items():
                lines += [f"| {scope} | {name} | {_fmt(value)} |" for name, value in metrics.items()
                          if not math.isnan(value)]
    sections = [("base", arm, c) for arm, c in report["comparisons"].items()]
    sections += [(c["reference"], c_name.split(" vs ", 1)[1], c) for c_name, c in report.get("pairwise", {}).items()]
    for reference, arm, comparison in sections:
        runs = comparison.get("runs", [1, 1])
        pooled = f", runs pooled: {runs[0]} and {runs[1]}" if max(runs) > 1 else ""
        lines += ["", f"## {reference} vs {arm} ({comparison['n_paired']} paired samples{pooled})", "",
                  f"| scope | metric | {reference} | {arm} | delta | {ci_header} | McNemar p | Holm p |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for scope, block in comparison["scopes"].items():
            for name, row in block["metrics"].items():
                if math.isnan(row["base"]) and math.isnan(row["arm"]):
                    continue  # a metric this subset cannot have (CV-Bench's 3D score on the 2D subset)
                arrow = " (lower is better)" if row["lower_is_better"] else ""
                low, high = row.get("ci", row["ci95"])
                lines.append(f"| {scope} (n={block['n']}) | {name}{arrow} | {_fmt(row['base'])} | {_fmt(row['arm'])} | "
                             f"{_fmt(row['delta'])} | [{_fmt(low)}, {_fmt(high)}] | "
                             f"{_fmt_p(row['mcnemar_p'])} | {_fmt_p(row.get('mcnemar_p_holm'))} |")
        changed = comparison["changed"]
        lines += ["", f"### answers that changed ({len(changed)})", ""]
        if reference != "base":
            if changed:
                lines.append(f"(listed in report.json under pairwise[\"{reference} vs {arm}\"])")
            continue
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
            errors = np.array([[max(0.0, -(rows[n]["ci"][0] - rows[n]["delta"])) if n in rows else 0 for n in names],
                               [max(0.0, rows[n]["ci"][1] - rows[n]["delta"]) if n in rows else 0 for n in names]])
            errors = np.nan_to_num(errors)
        ax.bar(np.arange(len(names)) + k * width, values, width, label=arm, yerr=errors, capsize=3)
    ax.set_xticks(np.arange(len(names)) + width * (len(arms) - 1) / 2, names, rotation=30, ha="right")
    level = report.get("correction", {}).get("ci_level", 0.95)
    ax.set_title(f"{report['run']['benchmark']} on {report['run']['model']} (error bars: {100 * level:.4g}% CI of "
                 f"the delta with base)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
