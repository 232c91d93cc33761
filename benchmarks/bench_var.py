"""VAR's cost, measured side by side: stock SDPA, vasink fast, vasink reference, released-style.

    python benchmarks/bench_var.py [--device cpu|cuda] [--quick] [--json PATH]

Timings are interleaved (A B C A B C ...), after a warm-up, and each ratio is the median over repeats of
(implementation time / stock time) within the same repeat. Before timing, the outputs of every VAR path
are checked against the reference path; a path that disagrees is not timed. Peak memory: on CUDA the
peak allocated memory; on CPU the peak-RSS growth (VmHWM after resetting it) of a fresh process that runs the workload once.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward

sys.path.insert(0, str(Path(__file__).resolve().parent))
from released_style import released_style_attention  # noqa: E402

import vasink  # noqa: E402
from vasink.attention import STATE_ATTR, register, var_attention_forward  # noqa: E402
from vasink.state import LayerPlan  # noqa: E402

SINK_DIMS = (1415, 2533)
CONFIG = vasink.VARConfig(tau=20.0, rho=0.5, p=0.6, sink_dims=SINK_DIMS)
IMPLEMENTATIONS = ("stock", "fast", "reference", "released-style")


@dataclass(frozen=True)
class LayerWorkload:
    name: str
    batch: int
    visual: int  # visual tokens after a BOS and a 35-token system prompt
    total: int  # prompt length
    decode: bool = False
    visual_sinks: int = 7


LAYER_WORKLOADS = {
    w.name: w for w in (
        LayerWorkload("layer-7b-prefill", 1, 576, 640),
        LayerWorkload("layer-7b-decode", 1, 576, 640, decode=True),
        LayerWorkload("layer-7b-prefill-b8", 8, 576, 640),
        LayerWorkload("layer-7b-decode-b8", 8, 576, 640, decode=True),
        LayerWorkload("layer-next-prefill", 1, 2880, 2944),
        LayerWorkload("layer-2k-prefill", 1, 1440, 2048),
        LayerWorkload("layer-4k-prefill", 1, 2880, 4096),
        LayerWorkload("layer-8k-prefill", 1, 2880, 8192),
    )
}


# -- one attention layer at LLaVA-1.5-7B shape ----------------------------------------------------------------


class FixedPlanState:
    """What vasink's attention function reads from a module: a config and a plan (fixed for a layer benchmark).

    Memos as in a generation: a prefill call derives everything afresh (fresh memos); a decode call finds the
    layer's memo filled at prefill (one kept across calls), and the call memo shared with the other layers."""

    original_implementation = "sdpa"
    intervention = None

    def __init__(self, plan: LayerPlan, config, decode: bool = False):
        self._plan, self.config, self.decode = plan, config, decode
        self._layer_memo, self._call_memo = {}, {}
        self.num_keys = 0

    def plan(self, layer_idx, num_queries, num_keys):
        self.num_keys = num_keys  # every key is a real position (no static cache's empty slots)
        if self.decode:
            return dataclasses.replace(self._plan, layer_memo=self._layer_memo, call_memo=self._call_memo)
        return dataclasses.replace(self._plan, layer_memo={}, call_memo={})


def text_config_7b() -> LlamaConfig:
    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                       num_hidden_layers=4, vocab_size=32064)


class AttentionSite(torch.nn.Module):
    """The attributes an attention function reads from its module (a LLaMA-7B attention layer, index 2)."""

    def __init__(self):
        super().__init__()
        self.layer_idx, self.num_key_value_groups, self.is_causal, self.head_dim = 2, 1, True, 128
        self.eval()


def layer_case(workload: LayerWorkload, device, dtype, seed: int = 0):
    """(site, q, k, v, plan): one attention call at LLaVA-1.5-7B shape (32 heads x 128), after projections."""
    generator = torch.Generator().manual_seed(seed)
    batch, total = workload.batch, workload.total
    start = 36  # BOS + 35 system tokens
    visual = torch.zeros(batch, total, dtype=torch.bool)
    visual[:, start:start + workload.visual] = True
    sinks = torch.zeros_like(visual)
    sinks[:, 0] = True
    for row in range(batch):
        sinks[row, torch.randperm(workload.visual, generator=generator)[:workload.visual_sinks] + start] = True
    eligible = ~visual & (torch.arange(total) >= start + workload.visual)[None]
    keys = total + (1 if workload.decode else 0)
    queries = 1 if workload.decode else total
    q = torch.randn(batch, 32, queries, 128, generator=generator)
    k = torch.randn(batch, 32, keys, 128, generator=generator)
    v = torch.randn(batch, 32, keys, 128, generator=generator)
    # Sink keys lean towards the mean query: about +2.5 on their logits, so sinks draw real attention.
    mean_q = q.mean(2, keepdim=True)
    k[:, :, :total] += 2.5 * 128 ** 0.5 * sinks[:, None, :, None] * mean_q / mean_q.pow(2).sum(-1, keepdim=True)
    if workload.decode:
        pad = torch.zeros(batch, 1, dtype=torch.bool)
        visual, sinks, eligible = torch.cat([visual, pad], 1), torch.cat([sinks, pad], 1), ~pad
    plan = LayerPlan(visual_keys=visual.to(device), sink_keys=sinks.to(device), eligible_queries=eligible.to(device))
    return AttentionSite(), q.to(device, dtype), k.to(device, dtype), v.to(device, dtype), plan


def layer_runner(workload: LayerWorkload, device, dtype):
    site, q, k, v, plan = layer_case(workload, device, dtype)
    register()
    scaling = 128 ** -0.5
    states = {impl: FixedPlanState(plan, CONFIG.replace(implementation=impl), workload.decode)
              for impl in ("fast", "reference")}

    def run(implementation):
        with torch.no_grad():
            if implementation == "stock":
                return sdpa_attention_forward(site, q, k, v, None, scaling=scaling)[0]
            if implementation == "exact":  # the reference path in float32: what half-precision paths are held to
                setattr(site, STATE_ATTR, states["reference"])
                return var_attention_forward(site, q.float(), k.float(), v.float(), None, scaling=scaling)[0]
            state = states["fast" if implementation == "fast" else "reference"]
            setattr(site, STATE_ATTR, state)
            if implementation == "released-style":
                return released_style_attention(site, q, k, v, None, scaling, plan, state.config)[0]
            return var_attention_forward(site, q, k, v, None, scaling=scaling)[0]
    return run


# -- end-to-end generate ----------------------------------------------------------------------------------------


def llava_7b_widths(device, dtype, layers: int = 3):
    """A random-weight LLaVA with LLaVA-1.5-7B text widths (3 layers) and a tiny vision tower (576 patches)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    text = text_config_7b()
    text.num_hidden_layers = layers
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                              image_size=336, patch_size=14)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    with torch.device(device):  # initialize on the device: a 32-layer model is 7B parameters
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.set_attn_implementation("sdpa")
    return model


def plant_massive_activation(model, dims=SINK_DIMS, visual_sinks: int = 7, magnitude: float = 300.0):
    """Benchmark workload only: random weights have no sink, so layer 0's output gets massive values at BOS and a
    few image patches during prefill (what a trained model's early MLP does)."""
    state = {}

    def on_model(module, args, kwargs):
        cache = kwargs.get("cache")
        ids = kwargs.get("input_ids")
        state["mask"] = None
        if ids is not None and (cache is None or cache.get_seq_length() == 0):
            mask = torch.zeros_like(ids, dtype=torch.bool)
            mask[:, 0] = True
            visual = (ids == model.config.image_token_id).nonzero()
            for row in range(ids.shape[0]):
                cols = visual[visual[:, 0] == row, 1]
                if len(cols):  # PAI's second pass runs the prompt without its image
                    mask[row, cols[torch.linspace(0, len(cols) - 1, visual_sinks).long()]] = True
            state["mask"] = mask

    def on_layer0(module, args, output):
        if state.get("mask") is None or output.shape[1] != state["mask"].shape[1]:
            return output
        output = output.clone()
        for d in dims:
            output[..., d] = torch.where(state["mask"], torch.full_like(output[..., d], magnitude), output[..., d])
        return output

    return [model.register_forward_pre_hook(on_model, with_kwargs=True),
            model.model.language_model.layers[0].register_forward_hook(on_layer0)]


def generate_inputs_7b(batch: int, device, dtype):
    image_tokens = 576
    ids = [1] + list(range(100, 135)) + [32000] * image_tokens + list(range(200, 228))
    input_ids = torch.tensor([ids] * batch, device=device)
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(batch, 3, 336, 336, generator=generator).to(device, dtype)}


def generate_runner(model, inputs, config, new_tokens: int = 32):
    def run(implementation):
        with torch.no_grad():
            if implementation == "stock":
                return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            with vasink.var(model, config.replace(implementation=implementation)):
                return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                      do_sample=False)
    return run


def organism_runner(batch: int, device, new_tokens: int = 32):
    from vasink import organism

    model, processor = organism.load()
    model = model.to(device)
    scene_list = organism.scenes.sample("test", batch, seed=0)
    questions = [s.questions[0][0] for s in scene_list]
    inputs = organism.build_inputs(processor, [s.image for s in scene_list], questions)
    return generate_runner(model, dict(inputs.to(device)), organism.recommended_config(), new_tokens)


# -- timing and memory -----------------------------------------------------------------------------------------


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def agree(outputs: dict, implementations) -> dict:
    """Which implementations agree with the reference (float tolerance; exact tokens for generate).

    Layer outputs are held to the float32 reference ("exact") when there is one: in half precision the
    reference path's own logits are rounded to the model's dtype."""
    ref = outputs.get("exact", outputs["reference"])
    verdict = {}
    for name in implementations:
        out = outputs[name]
        if name == "stock":
            verdict[name] = True
        elif out.dtype in (torch.long, torch.int):
            verdict[name] = bool(torch.equal(out, ref))
        else:
            tol = 1e-4 if out.dtype == torch.float32 else 2e-2
            verdict[name] = bool(torch.allclose(out.float(), ref.float(), rtol=tol, atol=tol))
    return verdict


def time_interleaved(run, implementations, repeats: int, device, inner: int = 1) -> dict[str, list[float]]:
    """Per repeat and implementation: the mean time of back-to-back calls, up to ``inner`` of them (GPU calls
    take microseconds), as many as fill about 10 ms."""
    times = {name: [] for name in implementations}
    calls = {}
    for name in implementations:  # warm-up, which also sizes each implementation's number of calls
        run(name)
        synchronize(device)
        start = time.perf_counter()
        run(name)
        synchronize(device)
        calls[name] = max(1, min(inner, int(0.01 / max(time.perf_counter() - start, 1e-6))))
    for _ in range(repeats):
        for name in implementations:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls[name]):
                run(name)
            synchronize(device)
            times[name].append((time.perf_counter() - start) / calls[name])
    return times


def memory_probe(implementation: str, workload_name: str, device_name: str, dtype_name: str) -> float:
    """Run one layer workload once in this (fresh) process; return peak memory growth in MB."""
    device, dtype = torch.device(device_name), getattr(torch, dtype_name)
    run = layer_runner(LAYER_WORKLOADS[workload_name], device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(implementation)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:  # reset the kernel's peak-RSS mark (VmHWM) to the current RSS
        f.write("5")
    before = proc_status_mb("VmRSS")
    run(implementation)
    return max(proc_status_mb("VmHWM") - before, 0.0)


def proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(implementation, workload_name, args) -> float | None:
    if args.device.startswith("cuda"):  # the CUDA allocator's peak counter is exact in-process
        gc.collect()
        torch.cuda.empty_cache()
        return memory_probe(implementation, workload_name, args.device, args.dtype)
    command = [sys.executable, __file__, "--memory-probe", implementation, workload_name,
               "--device", args.device, "--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"  memory probe {implementation} {workload_name} failed: {result.stderr.strip()[-300:]}")
        return None
    return float(result.stdout.strip().splitlines()[-1])


def eager_bytes(workload: LayerWorkload) -> int:
    return workload.batch * 32 * workload.total ** 2 * 4


# -- driver ----------------------------------------------------------------------------------------------------


def bench(name, run, implementations, repeats, device, rows, memory=None, inner=1, exact=False):
    outputs = {impl: run(impl) for impl in implementations + (("exact",) if exact else ())}
    verdict = agree(outputs, implementations)
    tokens = not outputs["reference"].is_floating_point()
    if tokens and outputs["reference"].device.type != "cpu" and not all(verdict.values()):
        # Half-precision generate: near-tied logits of a random model flip tokens between two roundings of the
        # same math (the layer workloads check the attention itself); time every path and say so.
        print(f"  {name}: tokens differ from the reference path's for {[i for i, ok in verdict.items() if not ok]} "
              "(half-precision rounding; timed anyway)")
        verdict = dict.fromkeys(verdict, True)
    timed = [impl for impl in implementations if verdict[impl]]
    ref = outputs.get("exact", outputs["reference"])
    for impl in implementations:
        if not verdict[impl]:
            gap = (outputs[impl].float() - ref.float()).abs().max().item() if ref.is_floating_point() else "tokens"
            print(f"  {name}: {impl} disagrees with the {'float32 ' if exact else ''}reference (max |diff| {gap}): "
                  "not timed")
    if "fast" in implementations and all(torch.equal(outputs["fast"], outputs["stock"]) for _ in [0]):
        print(f"  {name}: warning: VAR changed nothing on this workload")
    times = time_interleaved(run, timed, repeats, device, inner)
    for impl in timed:
        ratios = [t / s for t, s in zip(times[impl], times["stock"])]
        rows.append({"implementation": impl, "workload": name, "median_s": statistics.median(times[impl]),
                     "ratio_to_stock": statistics.median(ratios),
                     "peak_mem_mb": (memory or {}).get(impl)})
        print(f"  {name:<24} {impl:<15} {statistics.median(times[impl]):9.4f} s  x{rows[-1]['ratio_to_stock']:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 / float16 (CUDA default fp16)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and workloads (a few minutes on CPU)")
    parser.add_argument("--json", default=None, help="write the table as JSON rows to this path")
    parser.add_argument("--only", default=None, help="comma-separated workload names to run")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's); 1 avoids OpenMP stalls on a shared machine")
    parser.add_argument("--inner", type=int, default=None,
                        help="calls per timed layer sample (default: 20 on CUDA, 1 on CPU)")
    parser.add_argument("--memory-probe", nargs=2, metavar=("IMPL", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(memory_probe(*args.memory_probe, args.device, args.dtype))
        return 0

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    repeats = 3 if args.quick else 5
    inner = args.inner or (20 if device.type == "cuda" else 1)
    only = set(args.only.split(",")) if args.only else None
    wanted = lambda name: only is None or name in only  # noqa: E731
    rows: list[dict] = []
    print(f"device {device}, dtype {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")

    layer_plan = [("layer-7b-prefill", IMPLEMENTATIONS), ("layer-7b-decode", IMPLEMENTATIONS),
                  ("layer-7b-prefill-b8", IMPLEMENTATIONS), ("layer-7b-decode-b8", IMPLEMENTATIONS)]
    if not args.quick:
        layer_plan += [("layer-next-prefill", ("stock", "fast", "reference")),
                       ("layer-8k-prefill", ("stock", "fast"))]
    for name, impls in layer_plan:
        if not wanted(name):
            continue
        print(f"{name}:")
        memory = {impl: measure_memory(impl, name, args) for impl in impls} if name in (
            "layer-7b-prefill", "layer-8k-prefill") else None
        run = layer_runner(LAYER_WORKLOADS[name], device, dtype)
        if "reference" not in impls:  # 8k: check fast against reference on the eligible rows' neighbours is too big;
            impls_checked = impls  # compare with stock shape only; agreement is checked at smaller sizes
            outputs = {impl: run(impl) for impl in impls_checked}
            assert outputs["fast"].shape == outputs["stock"].shape
            times = time_interleaved(run, impls, max(2, repeats // 2), device, inner)
            for impl in impls:
                ratios = [t / s for t, s in zip(times[impl], times["stock"])]
                rows.append({"implementation": impl, "workload": name, "median_s": statistics.median(times[impl]),
                             "ratio_to_stock": statistics.median(ratios), "peak_mem_mb": (memory or {}).get(impl)})
                print(f"  {name:<24} {impl:<15} {statistics.median(times[impl]):9.4f} s  x{rows[-1]['ratio_to_stock']:.3f}")
            continue
        bench(name, run, impls, repeats, device, rows, memory, inner, exact=True)

    # Memory growth with sequence length (one fresh process per point).
    if not args.quick and wanted("memory-scaling"):
        print("memory-scaling (peak MB of one layer forward):")
        for name in ("layer-2k-prefill", "layer-4k-prefill", "layer-8k-prefill"):
            workload = LAYER_WORKLOADS[name]
            for impl in IMPLEMENTATIONS:
                if impl in ("reference", "released-style") and eager_bytes(workload) > 4 * 2**30:
                    print(f"  {name} {impl}: skipped (weights alone {eager_bytes(workload) / 2**30:.1f} GiB)")
                    continue
                mb = measure_memory(impl, name, args)
                rows.append({"implementation": impl, "workload": f"{name}-memory", "median_s": None,
                             "ratio_to_stock": None, "peak_mem_mb": mb})
                print(f"  {name:<20} {impl:<15} {mb if mb is None else round(mb)} MB")

    for batch in (1, 8):
        name = "generate-7b-widths" + ("" if batch == 1 else f"-b{batch}")
        if not wanted(name) or (args.quick and batch == 8):
            continue
        print(f"{name}:")
        model = llava_7b_widths(device, dtype)
        hooks = plant_massive_activation(model)
        config = CONFIG.replace(layers=(1,))  # 3 layers: layer 1 is the modified one (the last is never modified)
        bench(name, generate_runner(model, generate_inputs_7b(batch, device, dtype), config),
              ("stock", "fast", "reference"), max(2, repeats - 2), device, rows)
        for hook in hooks:
            hook.remove()
        del model

    for batch in (1, 8):  # the whole 32-layer LLaVA-1.5-7B text model, random weights: GPU only by default
        name = "generate-7b-full" + ("" if batch == 1 else f"-b{batch}")
        if not (wanted(name) and (device.type == "cuda" or only)) or (args.quick and batch == 8):
            continue
        print(f"{name}:")
        model = llava_7b_widths(device, dtype, layers=32)
        hooks = plant_massive_activation(model)
        bench(name, generate_runner(model, generate_inputs_7b(batch, device, dtype), CONFIG),
              ("stock", "fast", "reference"), max(2, repeats - 2), device, rows)
        for hook in hooks:
            hook.remove()
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for batch in (1, 8):
        name = "generate-organism" + ("" if batch == 1 else f"-b{batch}")
        if not wanted(name):
            continue
        try:
            run = organism_runner(batch, device)
        except FileNotFoundError as error:
            print(f"{name}: skipped ({error})")
            continue
        print(f"{name}:")
        bench(name, run, ("stock", "fast", "reference"), repeats, device, rows)

    print("\n| implementation | workload | median s | ratio to stock | peak MB |\n|---|---|---|---|---|")
    for row in rows:
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"| {row['implementation']} | {row['workload']} | {fmt(row['median_s'], '.4f')} | "
              f"{fmt(row['ratio_to_stock'], '.3f')} | {fmt(row['peak_mem_mb'], '.0f')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
