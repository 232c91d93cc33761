#!/usr/bin/env bash
# Regenerate docs/analysis on the shipped organism (CPU; a few minutes). Each folder gets the PNGs,
# numbers.json and a self-contained report.html; README.md quotes the numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1  # tiny model: one thread is fastest on a shared machine
out=docs/analysis
vasink sinks --out "$out/sinks" "$@"
vasink attention --out "$out/attention" "$@"
vasink heads --bench organism-pope --limit 100 --out "$out/heads" "$@"
vasink ablate --bench organism-pope --limit 100 --out "$out/ablate" "$@"
python -m vasink.analysis.findings "$out"
