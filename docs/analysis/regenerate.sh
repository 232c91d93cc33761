#!/usr/bin/env bash
# Regenerate docs/analysis on the shipped organism (CPU). Each folder gets the PNGs,
# numbers.json and a self-contained report.html; README.md quotes the numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
limit=${LIMIT:-100}  # POPE questions per negative-sampling subset for heads/ablate (LIMIT=30: 6 min on 2 CPU cores)
out=docs/analysis
vasink sinks --out "$out/sinks" "$@"
vasink attention --methods var,pai,vaf --out "$out/attention" "$@"
vasink heads --methods var,pai,vaf --bench organism-pope --limit "$limit" --out "$out/heads" "$@"
vasink ablate --bench organism-pope --limit "$limit" --out "$out/ablate" "$@"
python -m vasink.analysis.findings "$out"
