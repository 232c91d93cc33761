"""Measure the organism: the sink phenomenon and held-out accuracy (the numbers of docs/organism.md).

    >>> from vasink import organism
    >>> from vasink.organism import measure
    >>> model, processor = organism.load()
    >>> facts = measure.phenomenon(model, processor, n_scenes=64)
    >>> measure.accuracy(model, processor, n_scenes=200)

Self-contained (eager attention, ``output_hidden_states`` / ``output_attentions``), so it also serves as
an independent check of vasink's own detection functions.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..generation import generate_answers
from . import build, build_inputs, scenes

FIRST_SEARCHED_LAYER = 2


def rel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|x_d| / RMS(x) per dimension (float32); phi(x) is its max over the sink dims."""
    x = x.float()
    return x.abs() / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


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


def find_dims(hidden, bos, min_ratio: float, max_dims: int = 4) -> tuple[list[int], np.ndarray]:
    """Dimensions massive on BOS (|x_d|/RMS >= ``min_ratio``) at every layer >= 2, strongest first (at most
    ``max_dims``); also returns the per-layer mean |x_d|/RMS of BOS, (L', D), as the evidence."""
    per_layer = torch.stack([rel_magnitude(h)[bos].mean(0) for h in hidden[FIRST_SEARCHED_LAYER:]])  # (L', D)
    floor = per_layer.min(0).values  # (D,)
    order = floor.argsort(descending=True).tolist()[:max_dims]
    return sorted(d for d in order if floor[d].item() >= min_ratio), per_layer.numpy()


@torch.no_grad()
def discover_dims(model, processor, n_scenes: int = 16, seed: int = 0) -> tuple[list[int], np.ndarray]:
    """The organism's own sink-dimension search on ``n_scenes`` test prompts (see :func:`find_dims`)."""
    chunk = forward_all(model, processor, prompts(n_scenes, seed))
    width = chunk["hidden"][0].shape[-1]
    return find_dims(chunk["hidden"], chunk["bos"], min_ratio=max(4.5, 0.25 * width ** 0.5))


@torch.no_grad()
def phenomenon(model, processor, n_scenes: int = 64, seed: int = 0, tau: float | None = None,
               sink_dims=None, batch: int = 16) -> dict:
    """Sink numbers on the test split. ``tau``/``sink_dims`` default to the measured ones (vasink.json)."""
    items = prompts(n_scenes, seed)
    chunks = [forward_all(model, processor, items[i:i + batch]) for i in range(0, len(items), batch)]
    if sink_dims is None:
        width = chunks[0]["hidden"][0].shape[-1]
        dims, _ = find_dims(chunks[0]["hidden"], chunks[0]["bos"], min_ratio=max(4.5, 0.25 * width ** 0.5))
    else:
        dims = list(sink_dims)
    if not dims:
        raise ValueError("no sink dimension given or found: pass sink_dims to measure phi on")
    n_layers = len(chunks[0]["hidden"])
    grid = scenes.IMAGE_SIZE // build.PATCH_SIZE
    per_layer = []
    for l in range(n_layers):
        bos_phi, text_phi, vis_frac, bg_share, has_sink, ratios, bos_att = [], [], [], [], [], [], []
        for c_i, c in enumerate(chunks):
            phi = rel_magnitude(c["hidden"][l])[..., dims].amax(-1)  # (B, T)
            bos_phi += phi[c["bos"]].tolist()
            text_phi += phi[c["text"]].tolist()
            attn = c["attn"][l].float()  # (B, H, T, T)
            for b in range(phi.shape[0]):
                scene = items[c_i * batch + b][0]
                vpos = c["visual"][b].nonzero().squeeze(-1)
                vphi = phi[b, vpos]
                sink = vphi > tau if tau is not None else torch.zeros_like(vphi, dtype=torch.bool)
                vis_frac.append(sink.float().mean().item())
                has_sink.append(bool(sink.any()))
                background = _background_patches(scene, grid)
                if sink.any():
                    bg_share.append(background[sink.numpy()].mean())
                q = c["queries"][b]
                a = attn[b][:, q][:, :, vpos]  # (H, Q, V)
                a_bos = attn[b][:, q][:, :, c["bos"][b]].sum(-1)
                bos_att.append(a_bos.mean().item())
                if sink.any() and (~sink).any():
                    ratios.append((a[..., sink].mean() / a[..., ~sink].mean().clamp_min(1e-12)).item())
        per_layer.append({
            "layer": l, "bos_phi": float(np.mean(bos_phi)), "bos_phi_min": float(np.min(bos_phi)),
            "text_phi_median": float(np.median(text_phi)),
            "visual_sink_fraction": float(np.mean(vis_frac)),
            "images_with_visual_sink": float(np.mean(has_sink)),
            "sink_background_share": float(np.mean(bg_share)) if bg_share else float("nan"),
            "sink_vs_nonsink_attention": float(np.mean(ratios)) if ratios else float("nan"),
            "attention_to_bos": float(np.mean(bos_att)),
        })
    return {"sink_dims": dims, "tau": tau, "n_scenes": n_scenes, "layers": per_layer}


def _background_patches(scene, grid: int) -> np.ndarray:
    """(grid*grid,) bool, row-major as the visual tokens: True where the patch has no object pixel."""
    p = build.PATCH_SIZE
    m = scene.object_mask.reshape(grid, p, grid, p).any(axis=(1, 3))
    return ~m.reshape(-1)


def answer(model, processor, images, questions, max_new_tokens: int = 24) -> list[str]:
    return generate_answers(model, processor, build_inputs(processor, images, questions), max_new_tokens)


def accuracy(model, processor, n_scenes: int = 200, seed: int = 0, batch: int = 32) -> dict:
    """Per family: exact-match accuracy (for captions also CHAIR_s / CHAIR_i / recall of objects)."""
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
                            max_new_tokens=24 if family == "caption" else 3)
        entry = {"n": len(items), "accuracy": float(np.mean([p == r[2] for p, r in zip(preds, items)]))}
        if family == "caption":
            entry.update(_chair(preds, [r[0] for r in items]))
        report[family] = entry
    return report


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


def with_var(model, config):
    """``vasink.var(model, config)`` when the core is importable, else None (accuracy then is VAR-off only)."""
    try:
        import vasink
    except ImportError:  # pragma: no cover
        return None
    return vasink.var(model, config) if hasattr(vasink, "var") else None


def main(argv=None) -> None:
    """Measure a checkpoint and write measured.json (the numbers docs/organism.md reports)."""
    import argparse
    import json
    import time
    from pathlib import Path

    from . import load

    parser = argparse.ArgumentParser(description="measure the organism's sink and accuracy")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--accuracy-scenes", type=int, default=200)
    parser.add_argument("--tau", type=float, default=None)
    parser.add_argument("--dims", type=int, nargs="*", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-var", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model, processor = load(args.ckpt)
    t0 = time.time()
    report = {"checkpoint": str(args.ckpt or "shipped")}
    try:
        from vasink import find_sink_dims
        items = prompts(8, seed=1, split="validation")
        found = find_sink_dims(model, processor, prompts=[q for _, q in items], images=[s.image for s, _ in items])
        report["find_sink_dims"] = {"dims": list(found.dims), "min_ratio": found.min_ratio,
                                    "suggested_tau": found.suggested_tau,
                                    "top_frequency": found.frequency.topk(4).values.tolist(),
                                    "top_frequency_dims": found.frequency.topk(4).indices.tolist()}
    except Exception as exc:  # the core may not be there yet; the own measurement below stands alone
        report["find_sink_dims"] = {"error": repr(exc)}
    own_dims, evidence = discover_dims(model, processor, n_scenes=16)
    width = evidence.shape[-1]
    bos_top = evidence.min(0).argsort()[::-1][:4]
    report["own_find_dims"] = {"dims": own_dims, "bos_top_dims": bos_top.tolist(),
                               "bos_top_floor": evidence.min(0)[bos_top].round(2).tolist()}
    dims = args.dims or own_dims or bos_top[:1].tolist()
    tau = args.tau if args.tau is not None else max(4.5, 0.25 * width ** 0.5)
    report["phenomenon"] = phenomenon(model, processor, n_scenes=args.scenes, tau=tau, sink_dims=dims)
    report["accuracy_var_off"] = accuracy(model, processor, n_scenes=args.accuracy_scenes)
    if not args.no_var:
        try:
            from vasink.config import VARConfig
            ctx = with_var(model, VARConfig(tau=tau, sink_dims=tuple(dims), rho=0.5, p=0.6))
            if ctx is not None:
                with ctx:
                    report["accuracy_var_on"] = accuracy(model, processor, n_scenes=args.accuracy_scenes)
        except Exception as exc:
            report["accuracy_var_on"] = {"error": repr(exc)}
    report["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
