"""Commands ``vasink eval``, ``vasink report``, ``vasink sweep`` and ``vasink score``."""

from __future__ import annotations

import json

from ..config import PRESETS
from .flags import non_negative_int, non_negative_int_list, positive_int

ARM_NAMES = "base, var, pai, vaf, vcd"  # vasink.eval.arms.known_methods(), without importing it for --help


# command -> its one-line help (vasink --help lists these without building the parsers)
COMMANDS = {
    "eval": "evaluate a model on a benchmark: base and VAR, or any arms (--arms base,var,pai,vaf,vcd)",
    "report": "merge a run's record files and write report.md/.json/.png",
    "sweep": "a method's parameters over a grid (VAR: rho/p/tau), reusing one base arm",
    "score": "score an answers file made elsewhere, or re-score a vasink eval run (--run)",
}


def _known() -> str:
    from ..eval.registry import known_benchmarks

    return ", ".join(known_benchmarks())


def _add_run_arguments(parser, var_flags: bool = True) -> None:
    parser.add_argument("--model", default="organism",
                        help="'organism' (default), or a local path / hub id of a supported model")
    parser.add_argument("--bench", required=True, help=f"benchmark NAME or NAME:SUBSET; one of {_known()}")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="VAR preset (default: the benchmark's)")
    if var_flags:
        parser.add_argument("--var", choices=("off", "on", "both"), default=None,
                            help="arms to run: base only, VAR only, or both on the same prompts (default)")
        parser.add_argument("--arms", default=None,
                            help=f"comma-separated arms to run on the same prompts, any of {ARM_NAMES} "
                                 f"(default base,var); the report compares each with base and pairwise")
        parser.add_argument("--rho", type=float, default=None, help="override the preset's rho")
        parser.add_argument("--p", type=float, default=None, help="fraction of sink attention moved")
        parser.add_argument("--tau", type=float, default=None, help="sink threshold on phi")
    parser.add_argument("--set", action="append", default=[], metavar="ARM.FIELD=VALUE",
                        help="a method's parameter, e.g. pai.alpha=0.5 or vaf.layers=9,10 (repeatable)")
    parser.add_argument("--decoding", choices=("greedy", "sample", "official"), default="greedy",
                        help="greedy for every arm (default); sample: every arm samples (temperature 1, top_p 1) "
                             "at the same seeds; official: each arm its method's own (VCD samples)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="sampled arms: seeds each sample's generator (with its id and the run)")
    parser.add_argument("--runs", type=positive_int, default=1, help="sampled arms: answers per sample (default 1)")
    parser.add_argument("--sink-dims", type=non_negative_int_list, default=None,
                        help="comma-separated sink dimensions (default: the model's known ones; see find_sink_dims)")
    parser.add_argument("--limit", type=positive_int, default=None, help="first N samples of each subset")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="generation batch size (left padding)")
    parser.add_argument("--data", default=None, help="dataset id or local question file (default: the benchmark's)")
    parser.add_argument("--images", default=None, help="image folder for local question files")
    parser.add_argument("--out", default=None, help="output folder (default: vasink-eval/<bench>)")
    parser.add_argument("--shard", default=None, help="I/N: evaluate every N-th sample from the I-th")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                        help="the model's precision (default: float16 on CUDA, float32 on CPU); a resume needs "
                             "the precision the run began with")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    parser.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples for the report")


def add_commands(commands) -> None:
    evaluate = commands.add_parser("eval", help=COMMANDS["eval"])
    _add_run_arguments(evaluate)
    evaluate.set_defaults(func=run_eval_command)

    report = commands.add_parser("report", help=COMMANDS["report"])
    report.add_argument("out", help="an eval output folder")
    report.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples (default 1000)")
    report.set_defaults(func=run_report_command)

    sweep = commands.add_parser("sweep", help=COMMANDS["sweep"])
    _add_run_arguments(sweep, var_flags=False)
    sweep.add_argument("--rho", default=None, help="comma-separated rho values (default: the preset's)")
    sweep.add_argument("--p", default=None, help="comma-separated p values (default: the model's)")
    sweep.add_argument("--tau", default=None, help="comma-separated tau values (default: the model's)")
    sweep.add_argument("--method", default="var", help=f"the method to sweep, one of {ARM_NAMES} (default var)")
    sweep.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                       help="a config field of --method and its values, e.g. alpha=0.2,0.5 (repeatable)")
    sweep.set_defaults(func=run_sweep_command)

    score = commands.add_parser("score", help=COMMANDS["score"])
    score.add_argument("--bench", default=None,
                       help=f"benchmark NAME or NAME:SUBSET, with --answers; one of {_known()}")
    score.add_argument("--answers", default=None, help="JSONL answers: LLaVA's (question_id, text) or vasink records")
    score.add_argument("--run", default=None,
                       help="re-score a vasink eval run: its folder (as vasink report takes it) or its name under "
                            "vasink-eval/ (e.g. organism-pope); benchmark and data from its run.json")
    score.add_argument("--arm", default=None,
                       help="with vasink records or --run: the arm to score, e.g. base or var (needed when there "
                            "are several)")
    score.add_argument("--data", default=None,
                       help="dataset id or local question file (default: the benchmark's; with --run, the run's)")
    score.add_argument("--images", default=None, help="image folder for local question files")
    score.add_argument("--out", default=None, help="also write the scores to this JSON file")
    score.set_defaults(func=run_score_command)


def _settings(args, **extra):
    from ..eval.arms import parse_sets
    from ..eval.runner import EvalSettings, parse_shard

    sink_dims = tuple(args.sink_dims) if args.sink_dims else None
    return EvalSettings(bench=args.bench, model=args.model, preset=args.preset, limit=args.limit, sink_dims=sink_dims,
                        batch_size=args.batch_size, data=args.data, images=args.images, out=args.out,
                        shard=parse_shard(args.shard), device=args.device, dtype=args.dtype, params=parse_sets(args.set),
                        decoding=args.decoding, seed=args.seed, runs=args.runs, **extra)


def _finish(args, summary) -> int:
    from ..eval.report import build_report

    print(f"{summary['generated']} answers generated, {summary['skipped']} already done; "
          f"records: {summary['records_file']}")
    if not args.no_report:
        report = build_report(summary["out"], resamples=args.resamples)
        for arm, comparison in report["comparisons"].items():
            for name, row in comparison["scopes"]["overall"]["metrics"].items():
                low, high = row["ci"]
                print(f"  {name}: base {row['base']:.4g}  {arm} {row['arm']:.4g}  delta {row['delta']:+.4g} "
                      f"[{low:+.3g}, {high:+.3g}]")
        print(f"report: {summary['out'] / 'report.md'}")
    return 0


def run_eval_command(args) -> int:
    from ..eval.arms import parse_arms
    from ..eval.runner import run_eval

    if args.arms is not None and args.var is not None:
        raise ValueError(f"--var {args.var} and --arms {args.arms} both choose the arms; pass one (--arms base,var is "
                         f"--var both)")
    arms = parse_arms(args.arms) if args.arms is not None else None
    return _finish(args, run_eval(_settings(args, var=args.var or "both", arms=arms, rho=args.rho, p=args.p,
                                            tau=args.tau)))


def run_sweep_command(args) -> int:
    from ..eval.arms import get_method
    from ..eval.sweep import parse_grid, parse_grids, run_sweep

    get_method(args.method)
    if args.method != "var" and any(v is not None for v in (args.rho, args.p, args.tau)):
        raise ValueError(f"--rho, --p and --tau sweep VAR; for --method {args.method} pass --grid FIELD=V1,V2")
    grid = parse_grids(args.grid)
    if args.method != "var" and not grid:
        raise ValueError(f"--method {args.method}: name the grid with --grid FIELD=V1,V2 (e.g. alpha=0.2,0.5)")
    summary = run_sweep(_settings(args), parse_grid(args.rho, None, "--rho"), parse_grid(args.p, None, "--p"),
                        parse_grid(args.tau, None, "--tau"), method=args.method, grid=grid)
    return _finish(args, summary)


def run_report_command(args) -> int:
    from pathlib import Path

    from ..eval.report import build_report

    build_report(args.out, resamples=args.resamples)
    print((Path(args.out) / "report.md").read_text())
    return 0


def run_score_command(args) -> int:
    from pathlib import Path

    from ..eval.score import score_answers, score_run

    if (args.answers is None) == (args.run is None):
        raise ValueError("vasink score takes --answers FILE (with --bench) or --run RUN (a vasink eval run), "
                         "one of the two")
    if args.run is not None:
        result = score_run(args.run, arm=args.arm, data=args.data, images=args.images, bench=args.bench)
        source = f"run {result['run']} (arm {result['arm']})"
    else:
        if args.bench is None:
            raise ValueError("--answers needs --bench NAME (the benchmark the answers are for)")
        if not Path(args.answers).is_file():
            raise FileNotFoundError(f"--answers {args.answers}: no such file")
        result = score_answers(args.bench, args.answers, args.data, args.images, arm=args.arm)
        source = args.answers
    for scope, metrics in result["metrics"].items():
        print(f"{scope}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if result["missing"]:
        print(f"({result['missing']} samples of the benchmark have no answer in {source})")
    if result.get("sampled_runs", 1) > 1:
        print(f"(arm {result['arm']} sampled {result['sampled_runs']} answers per sample: run 0 scored; "
              f"vasink report pools them)")
    if result.get("skipped"):
        print(f"({result['skipped']} answer lines left out: not part of this benchmark's scoring, e.g. MMBench "
              f"rounds > 0 from LLaVA's --all-rounds)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0
