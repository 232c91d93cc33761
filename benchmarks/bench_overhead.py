"""Python-side cost of one call of the GPU fast path, without a GPU: the Triton launch is stubbed out.

    python benchmarks/bench_overhead.py

On a GPU, HF ``generate`` at 7B size is launch-bound, so what the fused path does on the host per layer call
(plan, flags, allocation) adds to every decode step. This times ``var_attention_forward`` on tiny CPU tensors
with the fused route forced and the kernel launch replaced by a no-op, side by side with a stock SDPA call on
the same tensors (whose compute is negligible at this size). Two cases: a decode call that finds the layer's
memo filled at prefill (as in generate), and a call that derives everything afresh (as at prefill).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_var import CONFIG, FixedPlanState, LayerWorkload, layer_case  # noqa: E402

import vasink.fused_attention as fused  # noqa: E402
from vasink.attention import STATE_ATTR, register, var_attention_forward  # noqa: E402


class NoLaunch:
    """Stands in for the Triton kernel: ``kernel[grid](...)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def per_call_us(call, calls: int = 3000) -> float:
    for _ in range(100):
        call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    torch.set_num_threads(1)
    register()
    site, q, k, v, plan = layer_case(LayerWorkload("tiny-decode", 1, 16, 64, decode=True), "cpu", torch.float32)
    fused._kernel = lambda: NoLaunch()
    fused.FUSED_DEVICES = ("cpu",)
    state = FixedPlanState(plan, CONFIG, decode=True)
    setattr(site, STATE_ATTR, state)

    stock = per_call_us(lambda: sdpa_attention_forward(site, q, k, v, None, scaling=0.25))
    memoized = per_call_us(lambda: var_attention_forward(site, q, k, v, None, scaling=0.25))
    state.decode = False  # fresh memos on every call
    fresh = per_call_us(lambda: var_attention_forward(site, q, k, v, None, scaling=0.25))
    print(f"stock SDPA call (1 x 32 heads x 65 keys):        {stock:6.1f} us")
    print(f"fused path, decode with the prefill's memos:     {memoized:6.1f} us  ({memoized / stock:.2f}x stock)")
    print(f"fused path, everything derived afresh:           {fresh:6.1f} us  ({fresh / stock:.2f}x stock)")


if __name__ == "__main__":
    main()
