"""The paper's findings checked, with numbers, against the outputs of the four analyses.

    python -m vasink.analysis.findings docs/analysis      # reads sinks/ attention/ heads/ ablate/, writes FINDINGS.md

Each finding (docs/method.md, "The phenomenon" and "What the paper reports") is stated as "holds", "does
not hold" or "not testable here" with the numbers behind the verdict; the thresholds are written next to each verdict so a reader can disagree with them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name / "numbers.json"
    return json.loads(path.read_text()) if path.exists() else None


def _array(values) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def _verdict(ok: bool | None) -> str:
    return {True: "**holds**", False: "**does not hold**", None: "**not testable here**"}[ok]


def sink_findings(sinks: dict) -> list[str]:
    layers = [entry for entry in sinks["layers"] if entry["layer"] >= 2]
    tau = sinks["config"]["tau"]
    bos = [e["bos_phi"] for e in layers]
    median = [e["median_phi"] for e in layers]
    held = [e["layer"] for e, b, m in zip(layers, bos, median) if b > tau and b > 2 * m]
    missed = [e["layer"] for e in layers if e["layer"] not in held]
    if not missed or len(held) < len(layers) / 2:
        verdict = _verdict(not missed)
    else:  # a real massive activation with exceptions: say where, rather than "does not hold"
        verdict = (f"**holds in {len(held)} of {len(layers)} searched layers** (not in layer"
                   f"{'s' if len(missed) > 1 else ''} {', '.join(map(str, missed))})")
    out = [f"- Massive activation on BOS in the sink dimensions {sinks['config']['sink_dims']} from layer 2 on: "
           f"{verdict} — BOS phi {', '.join(f'{b:.1f}' for b in bos)} (layers 2..) against a median "
           f"token's {', '.join(f'{m:.1f}' for m in median)}; tau {tau:g} (verdict: BOS phi above tau and twice "
           "the median, per searched layer: 'holds' in every one, 'does not hold' in fewer than half; a random "
           "direction gives phi about 3)."]
    counts = [len(e["visual_sink_cells"]) for e in layers]
    has_visual = any(counts)
    out.append(f"- Some image tokens carry the same massive activation (visual sinks): {_verdict(has_visual)} — "
               f"visual sinks per layer (2..): {counts} of {sinks['image_tokens']} image tokens.")
    ratios = [e["attention"]["per_visual_sink"] / e["attention"]["per_visual_nonsink"] for e in layers
              if e["attention"]["per_visual_sink"] is not None and e["attention"]["per_visual_nonsink"]]
    out.append(f"- Visual sinks draw more attention than other image tokens: "
               f"{_verdict(None if not ratios else min(ratios) > 1)} — per-token attention of a visual sink / "
               f"a non-sink image token: {', '.join(f'{r:.1f}x' for r in ratios) or 'no visual sink'} "
               "(head mean, text queries after the image).")
    return out


def head_findings(heads: dict) -> list[str]:
    result = heads["heads"]
    modified = heads["modified_layers"]
    mass = _array(result["visual_mass"])
    share = {name: _array(values) for name, values in result["selected"].items()}
    rows = [f"{name} {np.nanmean(values[modified]):.2f}" for name, values in share.items()]
    spread = float(np.nanmax(mass[modified]) - np.nanmin(mass[modified])) if modified else float("nan")
    ok = None if not modified else spread > 0.2
    return [f"- Only some heads look at the image (image-centric heads): {_verdict(ok)} — in the layers VAR may "
            f"modify ({modified}), mean visual mass per head ranges {np.nanmin(mass[modified]):.2f}..."
            f"{np.nanmax(mass[modified]):.2f} (verdict: spread > 0.2); share of rows the head test selects: "
            f"{', '.join(rows)}; prompts with a visual sink per layer: {result['prompts_with_visual_sink']}."]


def ablation_findings(ablate: dict) -> list[str]:
    summary = ablate["summary"]
    n = summary["base"]["n"]
    touched = sum(bool(r["visual_sink_layers"]) for r in ablate["records"])

    def show(key):
        e = summary[key]
        return f"{e['accuracy']:.3f} ({e['delta']:+.3f}, CI [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}])"

    if not touched:
        return [f"Base accuracy {summary['base']['accuracy']:.3f} on {n} samples.",
                f"- Ablations: {_verdict(None)} — none of the {n} samples has a visual sink in a layer VAR may "
                "modify, so no rule acts."] + residual_findings(ablate)
    base = summary["base"]["accuracy"]
    random_mask = summary.get("mask-random-visual/mean") or next(
        (v for k, v in summary.items() if k.startswith("mask-random-visual")), None)
    out = [f"Base accuracy {base:.3f} on {n} samples ({touched} with a visual sink where the rules act)."]
    if "mask-visual-sinks" in summary:
        sink_harmless = summary["mask-visual-sinks"]["ci95"][0] > -0.02
        out.append(f"- Masking text-to-visual-sink attention leaves accuracy about unchanged: "
                   f"{_verdict(sink_harmless)} — {show('mask-visual-sinks')} (verdict: CI lower end above -0.02).")
    if random_mask is not None:
        random_hurts = random_mask["ci95"][1] < 0
        out.append(f"- Masking as many random image tokens lowers it: {_verdict(random_hurts)} — mean over seeds "
                   f"{random_mask['accuracy']:.3f} ({random_mask['delta']:+.3f}, CI [{random_mask['ci95'][0]:+.3f}, "
                   f"{random_mask['ci95'][1]:+.3f}]) (verdict: CI upper end below 0).")
    if "var-all-heads" in summary:
        out.append(f"- VAR on all heads (no head test) hurts: {_verdict(summary['var-all-heads']['ci95'][1] < 0)} "
                   f"— {show('var-all-heads')}.")
    if all(k in summary for k in ("budget-text", "budget-visual", "budget-all")):
        out.append(f"- Giving the budget to text tokens only is worse than the base: "
                   f"{_verdict(summary['budget-text']['ci95'][1] < 0)} — text only {show('budget-text')}; "
                   f"visual only (VAR) {show('budget-visual')}; both {show('budget-all')}.")
    if len(out) == 1:
        out.append("- No ablation condition of the paper's findings was run (see --ablations).")
    return out + residual_findings(ablate)


def residual_findings(ablate: dict) -> list[str]:
    residual = ablate["residual"]
    classes = residual["classes"]
    per_attention = _array(residual["contribution_per_attention"])
    layers = [l for l in ablate["modified_layers"] if np.isfinite(per_attention[l, classes.index("visual sink")])]
    if not layers:
        modified = ablate["modified_layers"]
        bos, text = per_attention[modified, classes.index("BOS")], per_attention[modified, classes.index("text")]
        return [f"- Visual sinks write little into the residual stream: {_verdict(None)} — no visual sink. "
                f"BOS writes little per unit of attention (the text sink's half of the finding): "
                f"{_verdict(bool(np.all(bos < 0.5 * text)))} — ||a W_OV x|| / a in layers {modified}: BOS "
                f"{', '.join(f'{v:.1f}' for v in bos)}, other text tokens {', '.join(f'{v:.1f}' for v in text)}, "
                f"image tokens {', '.join(f'{v:.1f}' for v in per_attention[modified, classes.index('visual non-sink')])}"
                " (verdict: BOS below half of the text tokens')."]
    sink = per_attention[layers, classes.index("visual sink")]
    nonsink = per_attention[layers, classes.index("visual non-sink")]
    bos = per_attention[layers, classes.index("BOS")]
    return [f"- Visual sinks, like BOS, write little per unit of attention: {_verdict(bool(np.all(sink < nonsink)))} "
            f"— ||a W_OV x|| / a in layers {layers}: visual sink {', '.join(f'{v:.2f}' for v in sink)}, non-sink "
            f"image token {', '.join(f'{v:.2f}' for v in nonsink)}, BOS {', '.join(f'{v:.2f}' for v in bos)}."]


def write_findings(folder: str | Path) -> Path:
    folder = Path(folder)
    parts = ["# The paper's findings on this model", "",
             "Generated by `python -m vasink.analysis.findings` from the numbers.json files next to it.", ""]
    sections = (("sinks", "Sinks (one prompt)", sink_findings), ("heads", "Heads", head_findings),
                ("ablate", "Ablations and residual contribution", ablation_findings))
    for name in ("sinks", "heads", "ablate"):
        numbers = _load(folder, name)
        if numbers:
            config = numbers["config"]
            parts += [f"Model `{config.get('model', '?')}`, sink dims {config['sink_dims']}, tau {config['tau']:g}, "
                      f"rho {config['rho']:g}, p {config['p']:g}.", ""]
            break
    for name, title, make in sections:
        numbers = _load(folder, name)
        parts += [f"## {title}", ""] + (make(numbers) if numbers else [f"({name}/numbers.json missing)"]) + [""]
    path = folder / "FINDINGS.md"
    path.write_text("\n".join(parts))
    return path


if __name__ == "__main__":
    print(write_findings(sys.argv[1] if len(sys.argv) > 1 else "."))
