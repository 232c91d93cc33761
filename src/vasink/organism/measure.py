"""Measure the organism: the sink phenomenon and held-out accuracy (the numbers of docs/organism.md).

    >>> from vasink import organism
    >>> from vasink.organism import measure
    >>> model, processor = organism.load()
    >>> facts = measure.phenomenon(model, processor, n_scenes=64)
    >>> measure.accuracy(model, processor, n_scenes=200)

Sink dimensions come from vasink's own ``find_sink_dims`` and sink tokens from ``detect_sinks``; the
attention each kind of token draws is read from an eager forward (``output_attentions``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..generation import generate_answers
from . import build, build_inputs, scenes

FIRST_SEARCHED_LAYER = 2


@contextlib.contextmanager
def eager(model):
    impl = model.config.text_config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(impl)


def prompts(n_scenes: int, seed: int = 0, split: str = "test"):
    """One question per scene (families in turn), with the scene: the calibration/measurement prompts."""
    out = []
    for k, scene in enumerate(scenes.sample(split, n_scenes, seed)):
        out.append((scene, scene.questions[k % len(scene.questions)][0]))
    return out


@torch.no_grad()
def forward_all(model, processor, items):
    """Eager forward of the prompts: hidden states entering each layer, attentions, masks."""
    inputs = build_inputs(processor, [s.image for s, _ in items], [q for _, q in items])
    with eager(model):
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    image_id = model.config.image_token_index
    visual = ids == image_id
    bos = (mask.cumsum(1) == 1) & (mask == 1)
    after_image = visual.cumsum(1) > 0
    text = (mask == 1) & ~visual & ~bos
    return {"hidden": out.hidden_states[:-1], "attn": out.attentions, "visual": visual, "bos": bos,
            "text": text, "queries": text & after_image}


def discover(model, processor, n_scenes: int = 8, seed: int = 1):
    """``vasink.find_sink_dims`` on ``n_scenes`` validation prompts of the organism (not the test split)."""
    from vasink.discovery import find_sink_dims

    items = prompts(n_scenes, seed, split="validation")
    return find_sink_dims(model, processor, prompts=[q for _, q in items], images=[s.image for s, _ in items])


@torch.no_grad()
def phenomenon(model, processor, config, n_scenes: int = 64, seed: int = 0, batch: int = 16) -> dict:
    """Sink numbers per layer on ``n_scenes`` test prompts: phi of BOS, text and visual tokens on the
    config's sink dims, sink shares (``detect_sinks`` with the config's tau), where visual sinks sit, and
    the attention eligible text queries give BOS, a visual sink token and a non-sink visual token."""
    from vasink.api import detect_sinks

    items = prompts(n_scenes, seed)
    grid = scenes.IMAGE_SIZE // build.PATCH_SIZE
    per_layer: dict[int, dict[str, list]] = {}
    for start in range(0, len(items), batch):
        part = items[start:start + batch]
        inputs = build_inputs(processor, [s.image for s, _ in part], [q for _, q in part])
        report = detect_sinks(model, inputs, config)
        chunk = forward_all(model, processor, part)
        for layer, found in report.layers.items():
            acc = per_layer.setdefault(layer, {k: [] for k in (
                "bos_phi", "text_phi", "visual_phi", "text_sink", "visual_sink", "has_visual_sink", "background",
                "bos_attention", "sink_attention", "nonsink_attention", "ratio")})
            phi, sink = found.phi, found.sink_mask  # (B, T)
            acc["bos_phi"] += phi[chunk["bos"]].tolist()
            acc["text_phi"] += phi[chunk["text"]].tolist()
            acc["text_sink"] += sink[chunk["text"]].float().tolist()
            attn = chunk["attn"][layer].float() if layer < len(chunk["attn"]) else None  # (B, H, T, T)
            for b, (scene, _) in enumerate(part):
                vpos = chunk["visual"][b].nonzero().squeeze(-1)
                vsink = sink[b, vpos]
                acc["visual_phi"] += phi[b, vpos].tolist()
                acc["visual_sink"].append(vsink.float().mean().item())
                acc["has_visual_sink"].append(float(vsink.any()))
                if vsink.any():
                    acc["background"].append(_background_patches(scene, grid)[vsink.numpy()].mean())
                rows = attn[b][:, chunk["queries"][b]]  # (H, Q, T)
                acc["bos_attention"].append(rows[..., chunk["bos"][b]].sum(-1).mean().item())
                to_visual = rows[..., vpos]  # (H, Q, V)
                if vsink.any():
                    acc["sink_attention"].append(to_visual[..., vsink].mean().item())
                if (~vsink).any():
                    acc["nonsink_attention"].append(to_visual[..., ~vsink].mean().item())
                if vsink.any() and (~vsink).any():
                    acc["ratio"].append(acc["sink_attention"][-1] / max(acc["nonsink_attention"][-1], 1e-12))
    layers = []
    for layer, acc in sorted(per_layer.items()):
        layers.append({
            "layer": layer, "bos_phi": _mean(acc["bos_phi"]), "bos_phi_min": float(np.min(acc["bos_phi"])),
            "text_phi_median": float(np.median(acc["text_phi"])), "text_phi_p99": _quantile(acc["text_phi"], 0.99),
            "text_sink_fraction": _mean(acc["text_sink"]),
            "visual_phi_median": float(np.median(acc["visual_phi"])), "visual_phi_max": float(np.max(acc["visual_phi"])),
            "visual_sink_fraction": _mean(acc["visual_sink"]), "images_with_visual_sink": _mean(acc["has_visual_sink"]),
            "sink_background_share": _mean(acc["background"]),
            "attention_to_bos": _mean(acc["bos_attention"]),
            "attention_per_visual_sink": _mean(acc["sink_attention"]),
            "attention_per_nonsink_visual": _mean(acc["nonsink_attention"]),
            "sink_vs_nonsink_attention": _mean(acc["ratio"]),
        })
    return {"sink_dims": list(config.sink_dims), "tau": config.tau, "n_scenes": n_scenes, "layers": layers}


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _quantile(values, q: float) -> float:
    return float(np.quantile(values, q)) if len(values) else float("nan")


def _background_patches(scene, grid: int) -> np.ndarray:
    """(grid*grid,) bool, row-major as the visual tokens: True where the patch has no object pixel."""
    p = build.PATCH_SIZE
    m = scene.object_mask.reshape(grid, p, grid, p).any(axis=(1, 3))
    return ~m.reshape(-1)


def answer(model, processor, images, questions, max_new_tokens: int = 24) -> list[str]:
    return generate_answers(model, processor, build_inputs(processor, images, questions), max_new_tokens)


def accuracy(model, processor, n_scenes: int = 200, seed: int = 0, batch: int = 32) -> dict:
    """Per family: exact-match accuracy and the per-question correctness (for captions also CHAIR_s /
    CHAIR_i / recall of objects)."""
    rows = [(s, q, a, f) for s in scenes.sample("test", n_scenes, seed) for q, a, f in s.questions]
    by_family: dict[str, list] = {}
    for r in rows:
        by_family.setdefault(r[3], []).append(r)
    report = {}
    for family, items in sorted(by_family.items()):
        preds = []
        for i in range(0, len(items), batch):
            part = items[i:i + batch]
            preds += answer(model, processor, [r[0].image for r in part], [r[1] for r in part],
                            max_new_tokens=24 if family == "caption" else 4)
        correct = [float(_normalize(p) == r[2]) for p, r in zip(preds, items)]
        entry = {"n": len(items), "accuracy": float(np.mean(correct)), "correct": correct}
        if family == "caption":
            entry.update(_chair(preds, [r[0] for r in items]))
        report[family] = entry
    return report


@torch.no_grad()
def text_binding(lm, tokenizer, n_scenes: int = 60, seed: int = 0) -> dict:
    """The language model alone, told each test scene's caption as text ("The image shows a red circle and a
    blue square ."), on the scene's attribute and spatial questions: can it bind colours and places to shapes
    in text, before any image? Attribute: after "The <shape> is", the asked shape's colour must score highest
    among the colours the caption names (chance: one over their number); spatial: "yes" against "no" (either
    case) after the question, for "left of" (the caption lists the objects left to right, so the text
    answers it) and "above" (the caption does not say: chance). Returns per kind the accuracy, n and chance."""
    colours = list(scenes.COLORS)
    colour_ids = [tokenizer(" " + c, add_special_tokens=False)["input_ids"][0] for c in colours]
    yes_no = [[tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in pair]
              for pair in (("yes", "Yes"), ("no", "No"))]

    def next_logits(text):
        return lm(**tokenizer(text, return_tensors="pt")).logits[0, -1].float()

    results: dict[str, list] = {}
    for scene in scenes.sample("test", n_scenes, seed):
        caption = scenes.caption(scene)
        user = f"<|im_start|>user\n{scenes.told(scene)}\n"
        for question, truth, family in scene.questions:
            if family == "attribute":
                named = [k for k, c in enumerate(colours) if c in caption.split()]
                shape = question.split()[-2]  # "what color is the <shape> ?"
                logits = next_logits(f"{user}{question}<|im_end|>\n<|im_start|>assistant\nThe {shape} is")
                pick = max(named, key=lambda k: logits[colour_ids[k]])
                results.setdefault("attribute", []).append((colours[pick] == truth, 1 / len(named)))
            elif family == "spatial":
                logits = next_logits(f"{user}{question} Answer yes or no.<|im_end|>\n<|im_start|>assistant\n")
                yes, no = (max(logits[i] for i in ids) for ids in yes_no)
                kind = "spatial, left of" if "left of" in question else "spatial, above"
                results.setdefault(kind, []).append((("yes" if yes > no else "no") == truth, 0.5))
    return {kind: {"accuracy": float(np.mean([ok for ok, _ in rows])), "n": len(rows),
                   "chance": float(np.mean([c for _, c in rows]))} for kind, rows in sorted(results.items())}


def _normalize(answer_text: str) -> str:
    """The scenes' answers are lower-case words; the LM may add a full stop or capitalise."""
    return " ".join(answer_text.strip().lower().rstrip(".").split())


def compare(base: dict, other: dict, resamples: int = 1000) -> dict:
    """Per family: accuracy with VAR off and on and eval's 95 % paired bootstrap interval of the change."""
    from vasink.stats import paired_bootstrap

    out = {}
    for family, entry in base.items():
        b, o = np.array(entry["correct"]), np.array(other[family]["correct"])
        ci = paired_bootstrap(lambda d: {"accuracy": d["c"].mean(-1)}, {"c": b}, {"c": o}, resamples=resamples)
        out[family] = {"n": len(b), "off": float(b.mean()), "on": float(o.mean()),
                       "delta": float(o.mean() - b.mean()), "ci95": list(ci["accuracy"]),
                       "answers_changed": int((b != o).sum())}
    return out


def _chair(captions, scene_list) -> dict:
    hallucinated_caps, mentions, hallucinated, recalled, truth = 0, 0, 0, 0, 0
    for text, scene in zip(captions, scene_list):
        present = {o.shape for o in scene.objects}
        said = scenes.caption_objects(text)
        bad = [w for w in said if w not in present]
        hallucinated_caps += bool(bad)
        mentions += len(said)
        hallucinated += len(bad)
        recalled += len(present & set(said))
        truth += len(present)
    return {"chair_s": hallucinated_caps / len(captions), "chair_i": hallucinated / max(1, mentions),
            "recall": recalled / max(1, truth)}


def main(argv=None) -> None:
    """Measure a checkpoint and write measured.json (the numbers docs/organism.md reports)."""
    import argparse
    import json
    import time
    from pathlib import Path

    from vasink.api import var
    from vasink.config import PRESETS, VARConfig

    from . import load

    parser = argparse.ArgumentParser(description="measure the organism's sinks and accuracy")
    parser.add_argument("--ckpt", default=None, help="an exported run (default: the shipped checkpoint)")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--accuracy-scenes", type=int, default=120,
                        help="test scenes for the accuracies (default 120: at least 100 questions per family)")
    parser.add_argument("--tau", type=float, default=None, help="default: find_sink_dims' suggested tau")
    parser.add_argument("--out", default=None, help="write the measurement here (measured.json)")
    parser.add_argument("--facts", default=None,
                        help="also write the sink facts organism.recommended_config() reads (vasink.json) here")
    parser.add_argument("--tables", default=None, metavar="MEASURED_JSON",
                        help="measure nothing: print docs/organism.md's tables from this measured.json")
    parser.add_argument("--text-binding", action="store_true",
                        help="measure nothing else: the language model alone on the attribute and spatial "
                             "questions with each scene's caption as text (see text_binding): SmolLM2 as "
                             "released, or with --ckpt DIR (or 'shipped') that checkpoint's, its LoRA folded in")
    args = parser.parse_args(argv)
    if args.text_binding:
        import json

        from . import language_model

        torch.set_num_threads(2)
        if args.ckpt is None:
            lm, tokenizer = language_model.load()
        else:
            lm, processor = load(None if args.ckpt == "shipped" else args.ckpt)
            tokenizer = processor.tokenizer
        print(json.dumps(text_binding(lm.eval(), tokenizer, n_scenes=args.accuracy_scenes), indent=1))
        return
    if args.tables:
        import json
        from pathlib import Path

        print(tables(json.loads(Path(args.tables).read_text())))
        return
    torch.set_num_threads(2)
    model, processor = load(args.ckpt)
    t0 = time.time()
    found = discover(model, processor)
    tau = args.tau if args.tau is not None else round(found.suggested_tau, 2)
    report = {"checkpoint": str(args.ckpt or "shipped"),
              "find_sink_dims": {"dims": list(found.dims), "min_ratio": found.min_ratio,
                                 "suggested_tau": found.suggested_tau,
                                 "top_frequency": found.frequency.topk(4).values.tolist(),
                                 "top_frequency_dims": found.frequency.topk(4).indices.tolist()},
              "tau": tau}
    config = VARConfig(sink_dims=tuple(found.dims), tau=tau)
    report["phenomenon"] = phenomenon(model, processor, config, n_scenes=args.scenes)
    base = accuracy(model, processor, n_scenes=args.accuracy_scenes)
    report["accuracy_var_off"] = {f: {k: v for k, v in e.items() if k != "correct"} for f, e in base.items()}
    # per question, in scene order (a prefix is the first scenes' questions): tests hold a fixed sample to it
    report["correct_var_off"] = {f: "".join(str(int(c)) for c in e["correct"]) for f, e in base.items()}
    report["var"] = {}
    variants = {name: config.with_preset(name) for name in PRESETS}
    variants["general, all layers"] = config.with_preset("general").replace(skip_layers_without_visual_sink=False)
    for name, variant in variants.items():
        with var(model, variant):
            report["var"][name] = compare(base, accuracy(model, processor, n_scenes=args.accuracy_scenes))
    report["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    if args.facts:
        facts = {"sink_dims": list(found.dims), "tau": tau,
                 "visual_sinks": has_visual_sinks(report["phenomenon"]),
                 "note": "measured on the test split by python -m vasink.organism.measure (measured.json); "
                         "docs/organism.md"}
        Path(args.facts).write_text(json.dumps(facts, indent=1) + "\n")
    print(text)


TABLE_LAYERS = (0, 1, 2, 3, 5, 8, 10, 11, 12, 16, 20, 22, 23, 24, 26, 28, 29)  # the rows docs/organism.md shows


def tables(report: dict, layers=TABLE_LAYERS) -> str:
    """docs/organism.md's two tables from a measured.json ``report``: the sink per layer (``layers`` that the
    model has) and the held-out accuracy with VAR off and each VAR variant (paired intervals)."""
    def pct(x):
        return f"{100 * x:.1f}%"

    rows = ["| layer | BOS phi | text tokens: median / 99th pct phi | text tokens over tau | visual tokens: median / "
            "max phi | visual tokens over tau | images with a visual sink | text queries' attention to BOS | "
            "attention per visual token (non-sink / sink) |", "| --- " * 10 + "|"]
    for e in report["phenomenon"]["layers"]:
        if e["layer"] in layers:
            sink = e["attention_per_visual_sink"]
            per_token = f"{e['attention_per_nonsink_visual']:.4f}" + ("" if sink != sink else f" / {sink:.4f}")
            rows.append(f"| {e['layer']} | {e['bos_phi']:.1f} | {e['text_phi_median']:.1f} / {e['text_phi_p99']:.1f} "
                        f"| {pct(e['text_sink_fraction'])} | {e['visual_phi_median']:.1f} / {e['visual_phi_max']:.1f} "
                        f"| {pct(e['visual_sink_fraction'])} | {100 * e['images_with_visual_sink']:.0f}% "
                        f"| {e['attention_to_bos']:.3f} | {per_token} |")
    variants = list(report["var"])
    rows += ["", "| family | n | VAR off | " + " | ".join(variants) + " |", "| --- " * (3 + len(variants)) + "|"]
    for family, base in sorted(report["accuracy_var_off"].items()):
        cells = []
        for name in variants:
            c = report["var"][name][family]
            cells.append(f"{c['on']:.3f} ({c['delta']:+.3f}, CI [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], "
                         f"{c['answers_changed']} changed)")
        rows.append(f"| {family} | {base['n']} | {base['accuracy']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def has_visual_sinks(phenomenon: dict) -> bool:
    """The paper's first two criteria, read from :func:`phenomenon`: in most searched layers (>= 2) most images
    have a visual sink token, and the visual sink tokens are 0.5-25 % of the visual tokens."""
    searched = [e for e in phenomenon["layers"] if e["layer"] >= FIRST_SEARCHED_LAYER]
    meets = [e["images_with_visual_sink"] > 0.5 and 0.005 <= e["visual_sink_fraction"] <= 0.25 for e in searched]
    return bool(searched) and sum(meets) > len(searched) / 2


if __name__ == "__main__":
    main()
