"""Cost of the eval harness, measured side by side on organism-pope.

    python benchmarks/bench_eval.py [--device cpu|cuda] [--samples 192] [--repeats 3] [--json PATH]

1. Harness overhead: ``run_eval`` with ``--var off`` at batch 32 (sample loading, scoring, JSONL records
   flushed per batch, progress bar) against a bare loop over the same batches that builds
   the inputs with the processor, calls ``model.generate`` and decodes. Target: at most 1.15x.
2. Batching: per-sample time of ``run_eval`` at batch 1 against batch 32. Target: batch 32 at least 4x
   faster per sample.

Timings alternate (bare, harness, bare, harness, ...) after a warm-up; each ratio is the median over
repeats of the ratio within one repeat. The model is the shipped organism when its checkpoint exists,
otherwise the organism's architecture and processor with random weights (said in the output).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vasink.eval.loading import LoadedModel, load_model
from vasink.eval.registry import get_benchmark
from vasink.eval.runner import EvalSettings, run_eval


def organism_or_random(device: str, path: str | None = None) -> tuple[LoadedModel, str]:
    """The organism (SmolLM2-135M + the shipped vision tower), or an exported run at ``path``."""
    from vasink import organism
    from vasink.config import VARConfig

    model, processor = organism.load(path)
    what = f"organism checkpoint {path}" if path else "organism (shipped checkpoint)"
    return LoadedModel(model.to(device), processor, "organism", VARConfig()), what


def bare_loop(loaded: LoadedModel, samples, batch_size: int, max_new_tokens: int) -> float:
    from vasink.organism import build_inputs

    start = time.perf_counter()
    for i in range(0, len(samples), batch_size):
        batch = samples[i:i + batch_size]
        inputs = build_inputs(loaded.processor, [s.load_image() for s in batch], [s.prompt for s in batch])
        inputs = inputs.to(loaded.device)
        with torch.no_grad():
            out = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=loaded.processor.tokenizer.pad_token_id)
        loaded.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    _sync(loaded)
    return time.perf_counter() - start


def harness(loaded: LoadedModel, limit: int, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_eval(EvalSettings(bench="organism-pope", var="off", limit=limit, batch_size=batch_size, out=out,
                              progress=True), loaded=loaded)
        _sync(loaded)
        return time.perf_counter() - start


def _sync(loaded) -> None:
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=192, help="organism-pope samples (a multiple of 96)")
    parser.add_argument("--batch1-samples", type=int, default=48, help="samples timed at batch size 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", default=None, help="an organism checkpoint folder (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded, what = organism_or_random(args.device, args.checkpoint)
    bench = get_benchmark("organism-pope")
    per_subset = args.samples // 3
    samples = bench.load(limit=per_subset)
    per_subset_b1 = max(1, args.batch1_samples // 3)
    print(f"model: {what}; device {args.device}; {len(samples)} organism-pope samples; "
          f"torch threads {torch.get_num_threads()}")

    harness(loaded, 2, 32)  # warm-up (kernels, allocator, lazy imports)
    bare_loop(loaded, samples[:32], 32, bench.max_new_tokens)
    overhead, speedup, rows = [], [], []
    for repeat in range(args.repeats):
        t_bare = bare_loop(loaded, samples, 32, bench.max_new_tokens)
        t_harness = harness(loaded, per_subset, 32)
        t_b1 = harness(loaded, per_subset_b1, 1) / (3 * per_subset_b1)
        t_b32 = t_harness / len(samples)
        overhead.append(t_harness / t_bare)
        speedup.append(t_b1 / t_b32)
        rows.append({"bare_s": t_bare, "harness_s": t_harness, "per_sample_b1_ms": 1e3 * t_b1,
                     "per_sample_b32_ms": 1e3 * t_b32})
        print(f"repeat {repeat}: bare loop {t_bare:.3f} s | harness {t_harness:.3f} s | per sample: batch 1 "
              f"{1e3 * t_b1:.2f} ms, batch 32 {1e3 * t_b32:.2f} ms")
    result = {"model": what, "device": args.device, "samples": len(samples),
              "harness_over_bare": statistics.median(overhead),
              "batch32_speedup_per_sample": statistics.median(speedup),
              "repeats": rows}
    print(f"\nharness / bare generate loop (batch 32): {result['harness_over_bare']:.3f}x   (target <= 1.15x)")
    print(f"per-sample speed, batch 32 vs batch 1:   {result['batch32_speedup_per_sample']:.2f}x   (target >= 4x)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
