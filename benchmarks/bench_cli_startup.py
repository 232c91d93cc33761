"""How long ``vasink --help`` takes, as a person runs it: a fresh process each time.

    python benchmarks/bench_cli_startup.py [--runs 7] [--command "--help"] [--json PATH]

Each run starts ``python -m vasink.cli --help`` (the same code as the ``vasink`` entry point) in a new
process and times it to exit; one warm-up run first (file cache). Prints every run, the median and the
1 s target, and which heavy modules (torch, transformers, matplotlib) the CLI imported before its help
was printed (none is the goal: they are imported when a command runs).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time

TARGET_S = 1.0
HEAVY = ("torch", "transformers", "matplotlib")


def time_once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vasink.cli", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_imports() -> list[str]:
    code = ("import sys; import vasink.cli as c; c.build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    return [m for m in out.split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--command", default="--help", help="arguments after vasink (default: --help)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    command = shlex.split(args.command)
    time_once(command)  # warm-up
    times = [time_once(command) for _ in range(args.runs)]
    median = statistics.median(times)
    heavy = heavy_imports()
    print(f"vasink {args.command}: " + "  ".join(f"{t:.3f}" for t in times) + " s")
    print(f"median {median:.3f} s over {args.runs} runs; target < {TARGET_S:g} s: "
          f"{'met' if median < TARGET_S else 'NOT met'}")
    print(f"heavy modules imported by the parser: {', '.join(heavy) or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": args.command, "runs_s": times, "median_s": median, "target_s": TARGET_S,
                       "heavy_imports": heavy}, f, indent=2)


if __name__ == "__main__":
    main()
