"""What VAR and its peers cost, side by side: time and peak memory of each method relative to stock, on the same
model and the same prompts, in one run.

    python benchmarks/bench_peers.py                                   # CPU: 4-layer LLaVA at 512 widths, batch 2
    python benchmarks/bench_peers.py --workload 7b-widths --device cuda --dtype float16 --batch 8
    python benchmarks/bench_peers.py --workload tiny --repeats 2         # seconds: the test suite's smoke check

Methods: ``stock`` (the model's SDPA), ``var`` (vasink's default path), ``pai`` (attention edit and guidance
against the prompt without its image, official alpha 0.2 / gamma 1.1), ``pai-attention`` (its attention edit
alone, gamma 1), ``vaf`` (ClearSight's key scaling), ``vcd`` (contrast with the diffusion-noised image: main and
noised rows as one forward of 2B rows), ``vcd-separate`` (the same contrast, its second pass a forward of its own
after each main forward, with its own cache: VCD before the paired forward). Each
generates ``--new-tokens`` greedy tokens (min = max, so every method decodes as many) from a batch of
LLaVA-1.5-shaped prompts (BOS + 35 system tokens + 576 image tokens + 28 text tokens), random weights; a massive
value is written into layer 0's output at BOS and 7 patches so that VAR has sinks to act on (a workload
device, as in ``bench_var.py``). Timings are interleaved (stock var pai ... stock var pai ...) after a warm-up;
a ratio is the median over repeats of (method / stock) within one repeat. Memory: on CUDA the peak allocated
memory during one generate; on CPU the peak-RSS growth of a fresh process that builds the model and runs one
generate of the method (VmHWM reset through ``/proc/self/clear_refs`` after the build). Each method's tokens
are compared with stock's and the count of changed tokens is printed (a method that changes nothing here is
flagged: its cost would still be real, its effect not shown).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_var import (generate_inputs_7b, plant_massive_activation, proc_status_mb, synchronize,  # noqa: E402
                       time_interleaved)

import vasink  # noqa: E402

METHODS = ("stock", "var", "pai", "pai-attention", "vaf", "vcd", "vcd-separate")
# workload -> (text widths, decoder layers, sink dims planted and given to VAR, VAR's tau)
WORKLOADS = {
    "tiny": (dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                  vocab_size=32064), 4, (5, 40), 3.0),
    "512-widths": (dict(hidden_size=512, intermediate_size=1376, num_attention_heads=8, num_key_value_heads=8,
                        vocab_size=32064), 4, (100, 400), 10.0),
    "2k-widths": (dict(hidden_size=2048, intermediate_size=5504, num_attention_heads=16, num_key_value_heads=16,
                       vocab_size=32064), 4, (700, 1500), 20.0),
    "7b-widths": (dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                       vocab_size=32064), 4, (1415, 2533), 20.0),
}


def method_config(name: str, workload: str):
    """The config each method runs with (official defaults; VAR at the hallucination preset's rho 0.5)."""
    _, _, sink_dims, tau = WORKLOADS[workload]
    return {"stock": None,
            "var": vasink.VARConfig(tau=tau, rho=0.5, p=0.6, sink_dims=sink_dims),
            "pai": vasink.PAIConfig(),
            "pai-attention": vasink.PAIConfig(gamma=1.0),
            "vaf": vasink.VAFConfig(),
            "vcd": vasink.VCDConfig(seed=0), "vcd-separate": vasink.VCDConfig(seed=0)}[name]


def build(workload: str, device, dtype):
    """A random LLaVA with the workload's text widths and a 576-patch vision tower (its sinks planted by ``runner``)."""
    widths, layers, sink_dims, _ = WORKLOADS[workload]
    text = LlamaConfig(**widths, num_hidden_layers=layers)
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                              image_size=336, patch_size=14)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000, vision_feature_layer=-1,
                         vision_feature_select_strategy="default")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.set_attn_implementation("sdpa")
    model.generation_config.pad_token_id = 0
    return model


def runner(model, inputs, workload: str, new_tokens: int):
    """``run(method)``: one greedy generate with the method on. The sinks are planted (``plant_massive_activation``)
    after vasink's hooks, so that they see the rows the model runs (VCD's paired forward has 2B)."""
    sink_dims = WORKLOADS[workload][2]

    def generate():
        hooks = plant_massive_activation(model, dims=sink_dims)
        try:
            return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        finally:
            for hook in hooks:
                hook.remove()

    def run(name):
        config = method_config(name, workload)
        with torch.no_grad():
            if config is None:
                return generate()
            with vasink.var(model, config) as handle:
                if name == "vcd-separate":
                    handle.contrast.batch = False
                return generate()
    return run


def memory_probe(name: str, args) -> float:
    """Peak memory growth (MB) of one generate of method ``name`` in this (fresh) process."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = build(args.workload, device, dtype)
    inputs = generate_inputs_7b(args.batch, device, dtype)
    run = runner(model, inputs, args.workload, args.new_tokens)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(name)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with open("/proc/self/clear_refs", "w") as f:  # reset the kernel's peak-RSS mark (VmHWM) to the current RSS
        f.write("5")
    before = proc_status_mb("VmRSS")
    run(name)
    return max(proc_status_mb("VmHWM") - before, 0.0)


def measure_memory(name: str, args) -> float | None:
    command = [sys.executable, __file__, "--memory-probe", name, "--workload", args.workload, "--device", args.device,
               "--dtype", args.dtype, "--batch", str(args.batch), "--new-tokens", str(args.new_tokens)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"  memory probe {name} failed: {result.stderr.strip()[-300:]}")
        return None
    return float(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="512-widths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="time only")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(memory_probe(args.memory_probe, args))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods[0] != "stock" or any(m not in METHODS for m in methods):
        parser.error(f"--methods: a subset of {','.join(METHODS)} starting with stock")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    print(f"workload {args.workload}, batch {args.batch}, {args.new_tokens} new tokens, device {device}, dtype "
          f"{args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    model = build(args.workload, device, dtype)
    inputs = generate_inputs_7b(args.batch, device, dtype)
    run = runner(model, inputs, args.workload, args.new_tokens)
    tokens = {name: run(name) for name in methods}
    prompt = inputs["input_ids"].shape[1]
    changed = {name: int((tokens[name][:, prompt:] != tokens["stock"][:, prompt:]).sum()) for name in methods}
    times = time_interleaved(run, methods, args.repeats, device)
    memory = {} if args.no_memory else {name: measure_memory(name, args) for name in methods}
    rows = []
    stock_mem = memory.get("stock")
    print(f"{'method':<15} {'median s':>9} {'x stock':>8} {'peak MB':>9} {'x stock':>8} {'tokens changed':>15}")
    for name in methods:
        ratio = statistics.median(t / s for t, s in zip(times[name], times["stock"]))
        mem = memory.get(name)
        mem_ratio = mem / stock_mem if mem is not None and stock_mem else None
        rows.append({"method": name, "workload": args.workload, "device": str(device), "dtype": args.dtype,
                     "batch": args.batch, "new_tokens": args.new_tokens, "median_s": statistics.median(times[name]),
                     "time_ratio_to_stock": ratio, "peak_mem_mb": mem, "mem_ratio_to_stock": mem_ratio,
                     "tokens_changed": changed[name], "tokens": tokens[name][:, prompt:].numel()})
        flag = "  (changed nothing here)" if name != "stock" and changed[name] == 0 else ""
        print(f"{name:<15} {rows[-1]['median_s']:9.3f} {ratio:8.2f} "
              f"{'-' if mem is None else f'{mem:9.0f}':>9} {'-' if mem_ratio is None else f'{mem_ratio:8.2f}':>8} "
              f"{changed[name]:>7} / {rows[-1]['tokens']}{flag}")
    synchronize(device)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
