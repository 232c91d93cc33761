"""Train the organism from scratch: a text-only language-model stage, then the multimodal stage.

    >>> from vasink.organism.train import train
    >>> train("runs/organism", seed=0)           # the shipped recipe (defaults)

Nothing here touches activations or attention: the loss is plain next-token cross-entropy on the
dialogue text. Activations and attention are only *measured* (``monitor``) and logged, to watch the
sink form. The run checkpoints weights + optimizer state every few minutes and resumes from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration

from . import build, data, measure, scenes


@dataclass
class Recipe:
    shape: build.Shape = field(default_factory=build.Shape)
    text_steps: int = 1500         # stage 1: language model on scene descriptions + dialogues
    image_steps: int = 2500        # stage 2: the full LLaVA on images + dialogues
    batch_size: int = 32
    max_turns: int = 4             # dialogue turns per training sequence (text stage)
    image_max_turns: int = 8       # ... and in the image stage (more answers per image)
    image_lr: float | None = 2e-3  # image-stage learning rate (None: lr); 5e-3 collapsed the visual tokens
    image_answer_loss_only: bool = True  # image stage: loss on the answers only (LLaVA's practice)
    image_freeze_llm_steps: int = 300  # first steps of the image stage train only the vision tower + projector
    text_pack: int = 1             # text stage: dialogues of this many scenes in one sequence
    lr: float = 5e-3
    min_lr_ratio: float = 0.1      # cosine decay over the last decay_frac of each stage down to lr * this
    decay_frac: float = 0.2
    warmup: int = 100
    weight_decay: float = 0.3
    mask_first_target: bool = False  # no loss on predicting the token after BOS (always "USER:")
    decay_norms: bool = False      # also decay RMSNorm gains (toward 0) and other 1-D parameters
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    threads: int = 1               # torch threads (1: the shipped run; other counts change float rounding)
    monitor_every: int = 250
    save_every_s: float = 180.0


def lr_at(recipe: Recipe, step: int, stage_start: int, stage_steps: int) -> float:
    s = step - stage_start
    if s < recipe.warmup:
        return recipe.lr * (s + 1) / recipe.warmup
    decay_start = int(stage_steps * (1 - recipe.decay_frac))
    if s < decay_start:
        return recipe.lr
    frac = (s - decay_start) / max(1, stage_steps - decay_start)
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def train(out_dir, seed: int = 0, minutes: float | None = None, resume: bool = True,
          recipe: Recipe | None = None, log=print, init_from: str | None = None,
          start_step: int | None = None) -> Path:
    """Train (or resume) into ``out_dir``; write the final model + processor to ``out_dir/checkpoint``."""
    recipe = recipe or Recipe()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return _train(Path(out_dir), seed, minutes, resume, recipe, log, init_from, start_step)
    finally:
        torch.set_num_threads(threads_before)


def _train(out: Path, seed, minutes, resume, recipe: Recipe, log, init_from, start_step) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    processor = build.make_processor()
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build.make_config(processor, recipe.shape))
    model.float().train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 or recipe.decay_norms else no_decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=recipe.lr, betas=recipe.betas)
    step, elapsed = 0, 0.0
    state_path = out / "state.pt"
    if resume and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        log(f"resumed at step {step} ({elapsed / 60:.1f} min)")
    elif init_from is not None:  # probes only: weights of another run, fresh optimizer
        model.load_state_dict(torch.load(init_from, weights_only=False)["model"])
        step = start_step or 0
        log(f"weights from {init_from}, starting at step {step}")
    (out / "recipe.json").write_text(json.dumps({"seed": seed, **dataclasses.asdict(recipe)}, indent=1))

    encoder = data.Encoder()
    monitor_scenes = scenes.sample("validation", 16, seed=seed)
    total = recipe.text_steps + recipe.image_steps
    start, last_save = time.time() - elapsed, time.time()
    log_file = open(out / "log.jsonl", "a")
    while step < total:
        image = step >= recipe.text_steps
        stage_start, stage_steps = (recipe.text_steps, recipe.image_steps) if image else (0, recipe.text_steps)
        # A fresh stream per step: the run is reproducible from the seed, also across a resume.
        rng = np.random.default_rng([seed, step])
        pack = 1 if image else recipe.text_pack
        batch_scenes = [scenes.make_scene(rng) for _ in range(recipe.batch_size * pack)]
        turns = recipe.image_max_turns if image else recipe.max_turns
        batch = encoder.batch(rng, batch_scenes, image=image, max_turns=turns, pack=pack,
                              answers_only=image and recipe.image_answer_loss_only)
        if recipe.mask_first_target:
            batch["labels"][:, 1] = data.IGNORE
        lr = lr_at(recipe, step, stage_start, stage_steps)
        if image and recipe.image_lr is not None:
            lr *= recipe.image_lr / recipe.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if image and step - recipe.text_steps < recipe.image_freeze_llm_steps:
            for name, p in model.named_parameters():  # LLaVA's alignment stage: the language model is frozen
                if "language_model" in name or "lm_head" in name:
                    p.grad = None  # AdamW skips a parameter without a gradient (no decay either)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], recipe.grad_clip)
        optimizer.step()
        step += 1
        if step % 20 == 0:
            record = {"step": step, "stage": "image" if image else "text", "loss": round(loss.item(), 4),
                      "lr": lr, "min": round((time.time() - start) / 60, 2)}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if step % recipe.monitor_every == 0 or step == total:
            summary = monitor(model, encoder, monitor_scenes, image=image)
            summary.update(step=step, loss=round(loss.item(), 4), min=round((time.time() - start) / 60, 2))
            log_file.write(json.dumps({"monitor": summary}) + "\n")
            log_file.flush()
            log(format_monitor(summary))
        timed_out = minutes is not None and time.time() - start > minutes * 60
        boundary = step == recipe.text_steps  # the text-only LM, kept: the image stage can be rerun from it
        if time.time() - last_save > recipe.save_every_s or step == total or timed_out or boundary:
            _save_state(state_path, model, optimizer, step, time.time() - start)
            if boundary:
                shutil.copyfile(state_path, out / "state_text_stage.pt")
            last_save = time.time()
        if timed_out:
            log(f"stopped at step {step}: {minutes} min budget")
            break
    log_file.close()
    ckpt = out / "checkpoint"
    model.eval()
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    log(f"wrote {ckpt} after {(time.time() - start) / 60:.1f} min, step {step}")
    return ckpt


def export(run_dir, out_dir) -> Path:
    """Write the model + processor of a run's latest ``state.pt`` as a loadable checkpoint (float32)."""
    run, out = Path(run_dir), Path(out_dir)
    recipe_fields = json.loads((run / "recipe.json").read_text())
    shape = build.Shape(**recipe_fields["shape"])
    processor = build.make_processor()
    model = LlavaForConditionalGeneration(build.make_config(processor, shape))
    state = torch.load(run / "state.pt", weights_only=False)
    model.load_state_dict(state["model"])
    model.float().eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "trained_steps.json").write_text(json.dumps({"step": state["step"], "minutes": state["elapsed"] / 60}))
    return out


def _save_state(path: Path, model, optimizer, step: int, elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "elapsed": elapsed}, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def monitor(model, encoder: data.Encoder, monitor_scenes, image: bool) -> dict:
    """Measure (never train on) the sink: BOS's largest dims and phi per layer, phi of the median text
    token and of visual tokens on BOS's dims, and attention from the answer-side text to BOS / visual."""
    rows, answers = [], []
    for scene in monitor_scenes:
        q = scene.questions[len(rows) % len(scene.questions)]
        answers.append(encoder.vocab[q[1].split()[0]])
        ids = encoder.dialogue(scene, [(q[0], "", q[2])], image)[:-1]  # prompt only, ends at ASSISTANT:
        rows.append(ids)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), encoder.pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for r, ids in enumerate(rows):  # left padding, as at inference
        input_ids[r, width - len(ids):] = torch.tensor(ids)
        mask[r, width - len(ids):] = 1
    kwargs = {"pixel_values": data.pixels([s.image for s in monitor_scenes])} if image else {}
    was_training = model.training
    model.eval()
    try:
        with measure.eager(model):  # restores the attention implementation even if the forward fails
            out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True,
                        output_attentions=True, **kwargs)
    finally:
        model.train(was_training)
    hs = out.hidden_states  # (L+1) x (B, T, D); hs[l] enters layer l
    first_word_acc = (out.logits[:, -1].argmax(-1) == torch.tensor(answers)).float().mean().item()
    bos_pos = (mask.cumsum(1) == 1) & (mask == 1)
    visual = input_ids == encoder.image
    text = (mask == 1) & ~visual & ~bos_pos
    after = visual.cumsum(1) > 0 if image else text.cumsum(1) > 0
    queries = text & after & ~visual
    layers = []
    for l in range(len(hs) - 1):
        x = hs[l].float()
        rel = x.abs() / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()  # (B, T, D)
        bos_rel = rel[bos_pos]  # (B, D)
        top = bos_rel.mean(0).topk(2)
        dims = top.indices.tolist()
        phi = rel[..., dims].amax(-1)  # phi on BOS's top-2 dims
        norms = x.norm(dim=-1)
        entry = {"l": l, "dims": dims, "bos_phi": round(phi[bos_pos].mean().item(), 2),
                 "bos_norm_x": round((norms[bos_pos].mean() / norms[text].median()).item(), 2),
                 "text_med": round(phi[text].median().item(), 2),
                 "text_maxall": round(rel[text].amax(-1).median().item(), 2)}
        if image:
            pv = phi[visual]
            entry["vis_p99"] = round(pv.quantile(0.99).item(), 2)
            entry["vis_max"] = round(pv.max().item(), 2)
            entry["vis_frac4"] = round((pv > 4).float().mean().item(), 3)
        if l < len(out.attentions):
            a = out.attentions[l].float()  # (B, H, T, T)
            q_mask = queries[:, None, :, None].float()
            n_q = queries.sum()
            to_bos = (a * bos_pos[:, None, None, :]).sum(-1, keepdim=True)
            entry["att_bos"] = [round(v, 3) for v in ((to_bos * q_mask).sum((0, 2, 3)) / n_q).tolist()]
            if image:
                av = a * visual[:, None, None, :]
                to_vis = av.sum(-1, keepdim=True)
                entry["att_vis"] = [round(v, 3) for v in ((to_vis * q_mask).sum((0, 2, 3)) / n_q).tolist()]
                top_vis = av.amax(-1, keepdim=True)
                entry["att_vis_max"] = [round(v, 3) for v in ((top_vis * q_mask).sum((0, 2, 3)) / n_q).tolist()]
        layers.append(entry)
    return {"layers": layers, "first_word_acc": round(first_word_acc, 3)}


def format_monitor(summary: dict) -> str:
    lines = [f"step {summary['step']} loss {summary['loss']} ({summary['min']} min) "
             f"first-word accuracy {summary.get('first_word_acc')}"]
    for e in summary["layers"]:
        extra = {k: v for k, v in e.items() if k != "l"}
        lines.append(f"  L{e['l']} " + " ".join(f"{k}={v}" for k, v in extra.items()))
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description="train the vasink organism")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--init-from", default=None, help="(probes) start from another run's state.pt weights")
    parser.add_argument("--start-step", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[], help="recipe overrides, e.g. lr=1e-2 text_width=192")
    args = parser.parse_args(argv)
    recipe = Recipe()
    for item in args.set:
        key, value = item.split("=", 1)
        target = recipe.shape if hasattr(recipe.shape, key) else recipe
        current = getattr(target, key)
        if isinstance(current, bool):
            parsed = value.lower() in ("1", "true", "yes")
        elif current is None:
            parsed = float(value)
        elif isinstance(current, tuple):
            parsed = tuple(float(v) for v in value.strip("()").split(","))
        else:
            parsed = type(current)(value)
        setattr(target, key, parsed)
    train(args.out, seed=args.seed, minutes=args.minutes, resume=not args.no_resume, recipe=recipe,
          log=lambda m: print(m, flush=True), init_from=args.init_from, start_step=args.start_step)


if __name__ == "__main__":
    main()
