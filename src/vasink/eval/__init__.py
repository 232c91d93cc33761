"""Evaluation of base vs VAR, side by side: benchmarks, a resumable batched runner, paired reports.

    from vasink.eval import EvalSettings, run_eval, build_report
    run_eval(EvalSettings(bench="organism-pope", limit=200, out="runs/pope"))   # base and VAR arms
    build_report("runs/pope")                                                 # report.md / .json / .png

    from vasink.eval import known_benchmarks, get_benchmark
    known_benchmarks()          # ['chair', 'cvbench', ..., 'organism-pope', 'pope', ...]

The command line: ``vasink eval``, ``vasink report``, ``vasink sweep``, ``vasink score``.
"""

from .registry import Benchmark, Sample, Score, get_benchmark, known_benchmarks, register
from .report import build_report
from .runner import EvalSettings, run_eval
from .sweep import run_sweep

__all__ = ["Benchmark", "Sample", "Score", "register", "get_benchmark", "known_benchmarks", "EvalSettings",
           "run_eval", "run_sweep", "build_report"]
