"""Train the organism's vision side against SmolLM2-135M-Instruct, as LLaVA is trained.

    >>> from vasink.organism.train import train
    >>> train("runs/organism")            # the shipped recipe (defaults); resumes if the folder has a state

Stage 0 (:mod:`.pretrain`): the vision tower learns the scenes on its own, without the language model
(CLIP-style contrast with the scenes' descriptions, dense patch labels, counts), as LLaVA starts from a
pretrained CLIP. Stage 1 (LLaVA's alignment stage): the language model and the tower are frozen; the
projector learns to answer the scenes' questions (loss on the answers only). Stage 2: the language model
adapts too, through LoRA adapters (``peft``) on its attention and MLP projections, so that what ships stays
small; the projector keeps learning.

Nothing here targets activations or attention: the loss is next-token cross-entropy on the answers. The
visual tokens' phi on SmolLM2's sink dimension and the attention they draw are only *measured*
(:func:`monitor`) and logged, to watch whether a visual sink forms. The state (trainable weights, optimizer,
step) is saved as safetensors every few minutes and at the stage boundary; a run resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import build, data, language_model, pretrain, scenes
from .state_file import drop_rows_after, read_state as _read_state, save_state as _save, saved_step

LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


@dataclass
class Recipe:
    vision: build.VisionShape = field(default_factory=build.VisionShape)
    pretrain_steps: int = 2500     # stage 0: the tower alone (no LM), batch pretrain_batch
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3
    stage1_steps: int = 100        # frozen LM: the projector (and the tower unless freeze_tower)
    stage2_steps: int = 1600       # + LoRA on the LM
    freeze_tower: bool = True      # after stage 0 the tower stays as pretrained (LLaVA keeps CLIP frozen)
    batch_size: int = 8
    max_turns: int = 3             # questions of one scene per training sequence
    stage2_families: tuple[str, ...] | None = None  # stage 2 asks only these families (None: all), e.g. ("caption",)
    # how often a scene's question of a family is drawn into a dialogue, relative to 1 (the families not named),
    # e.g. {"attribute": 4.0, "spatial": 3.0}: a scene has six existence questions but one attribute question
    family_weights: dict[str, float] = field(default_factory=lambda: {"attribute": 2.0, "spatial": 3.0,
                                                                      "counting": 2.0})
    caption_last: bool = False     # ask a drawn caption last (it names colours and left-to-right order)
    pretrain_place: bool = True    # stage 0 also predicts each object patch's centre column and row
    pretrain_bind: bool = True     # stage 0 also predicts, from the mean token, the (shape, colour) pairs and
                                   # each shape's column and row (thermometer codes)
    caption_context: float = 0.5   # stage 2: this share of dialogues also shows the caption as text (see data.Encoder)
    projector_words: float = 1.0   # weight of the projector's word targets: an object patch's visual token near
                                   # the sum of its colour's and shape's word embeddings (stages 1 and 2)
    word_places: bool = True       # ... plus its place: (1 - x) * " left" + x * " right", the same with top/bottom
    projector_fit_steps: int = 300 # before stage 1: the projector alone fitted to those word targets (no LM)
    lr: float = 1e-3               # stage 1 (projector, and tower unless frozen)
    stage2_lr: float = 2e-4        # stage 2 (LoRA and the projector)
    lora_rank: int = 16
    lora_alpha: int = 32
    warmup: int = 30
    min_lr_ratio: float = 0.1      # cosine decay over each stage down to lr * this
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    bf16_autocast: bool = True     # 1.5x faster on a CPU with AVX512-BF16; master weights stay float32
    threads: int = 2
    monitor_every: int = 50
    save_every_s: float = 240.0
    sink_dim: int = 507            # SmolLM2's massive-activation dim: watched by the monitor, never trained on
    sink_tau: float = 17.5         # the monitor's visual-sink threshold on phi (find_sink_dims suggests 17.55 on the shipped model)


def lr_at(recipe: Recipe, step: int) -> float:
    stage2 = step >= recipe.stage1_steps
    base = recipe.stage2_lr if stage2 else recipe.lr
    s = step - recipe.stage1_steps if stage2 else step
    steps = recipe.stage2_steps if stage2 else recipe.stage1_steps
    return _cosine(recipe, base, s, steps)


def _cosine(recipe: Recipe, base: float, s: int, steps: int) -> float:
    if s < recipe.warmup:
        return base * (s + 1) / recipe.warmup
    frac = (s - recipe.warmup) / max(1, steps - recipe.warmup)
    return base * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


# Recipe fields added after runs were written (the recipe.json files in docs/organism/ among them), each with
# the value those runs had; recipe_from_dict fills them in, so an old run resumes and re-exports as it ran.
_ADDED_LATER = {"family_weights": {}, "caption_last": False, "pretrain_place": False, "pretrain_bind": False,
                "caption_context": 0.0, "projector_words": 0.0,
                "projector_fit_steps": 0, "word_places": False}


def recipe_from_dict(fields: dict) -> Recipe:
    fields = dict(fields)
    for name, value in _ADDED_LATER.items():  # a recipe written before the field: the value it ran with
        fields.setdefault(name, dict(value) if isinstance(value, dict) else value)  # never share the default
    vision = build.VisionShape(**fields.pop("vision", {}))
    known = {f.name for f in dataclasses.fields(Recipe)}
    if fields.get("stage2_families") is not None:
        fields["stage2_families"] = tuple(fields["stage2_families"])
    return Recipe(vision=vision, **{k: v for k, v in fields.items() if k in known})


def recipe_file(path) -> Recipe:
    """The recipe a run recorded: its ``recipe.json`` or its checkpoint's ``organism.json`` (both keep it under
    ``"recipe"``), so that a documented run is reproduced with ``vasink organism train --recipe FILE``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe file {path} does not exist (a run folder's recipe.json or a checkpoint's "
                                f"organism.json)")
    try:
        fields = json.loads(path.read_text())["recipe"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path} holds no recipe: expected a run's recipe.json or a checkpoint's organism.json, "
                         f"a JSON object with a \"recipe\" entry") from None
    return recipe_from_dict(fields)


def recipe_with(recipe: Recipe, settings: dict[str, str]) -> Recipe:
    """``recipe`` with fields set from text (``{"lora_rank": "64", "vision.layers": "6",
    "stage2_families": "caption,counting"}``), each converted to the field's type; unknown fields and values
    that do not convert are refused with the list of fields."""
    fields = dataclasses.asdict(recipe)
    names = sorted([f.name for f in dataclasses.fields(Recipe) if f.name != "vision"]
                   + [f"vision.{f.name}" for f in dataclasses.fields(build.VisionShape)])
    for key, text in settings.items():
        where, name = (fields["vision"], key.split(".", 1)[1]) if key.startswith("vision.") else (fields, key)
        if key not in names:
            raise ValueError(f"unknown recipe field {key!r}; the fields: {', '.join(names)}")
        if name == "family_weights":
            value = _family_weights(text)
        elif name == "stage2_families":
            value = None if text.lower() == "none" else tuple(f.strip() for f in text.split(",") if f.strip())
            unknown = set(value or ()) - set(scenes.FAMILIES)
            if unknown:
                raise ValueError(f"unknown question family {sorted(unknown)}; known: {', '.join(scenes.FAMILIES)}")
        else:
            kind = type(where[name])
            try:
                value = (text.lower() in ("1", "true", "yes")) if kind is bool else kind(text)
            except ValueError:
                raise ValueError(f"recipe field {key} takes a {kind.__name__}, got {text!r}") from None
        where[name] = value
    return recipe_from_dict(fields)


def _family_weights(text: str) -> dict[str, float]:
    """``"attribute=4,spatial=3"`` -> ``{"attribute": 4.0, "spatial": 3.0}`` ("none": every family weighs 1)."""
    if text.strip().lower() == "none":
        return {}
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        family, _, value = part.partition("=")
        if family.strip() not in scenes.FAMILIES:
            raise ValueError(f"unknown question family {family.strip()!r}; known: {', '.join(scenes.FAMILIES)}")
        try:
            weights[family.strip()] = float(value)
        except ValueError:
            raise ValueError(f"family_weights takes FAMILY=NUMBER pairs, got {part!r}") from None
        if not weights[family.strip()] > 0:
            raise ValueError(f"family weight {part!r} must be positive")
    return weights


def add_lora(model, recipe: Recipe, seed: int = 0):
    """Wrap ``model`` with LoRA adapters on the language model (the vision side stays trainable); the
    adapters' random half (lora_A) is drawn from ``seed``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=0.0,
                        target_modules=LORA_TARGETS,
                        modules_to_save=None)
    peft_model = get_peft_model(model, config)
    for name, p in peft_model.named_parameters():
        if "multi_modal_projector" in name or ("vision_tower" in name and not recipe.freeze_tower):
            p.requires_grad_(True)
    return peft_model


def lora_config_dict(recipe: Recipe) -> dict:
    return {"r": recipe.lora_rank, "lora_alpha": recipe.lora_alpha, "target_modules": LORA_TARGETS}


def branch(from_run, out_dir, log=print) -> None:
    """Start ``out_dir`` from ``from_run``'s end of stage 1 (its tower and its stage-1 state), so that a
    stage-2 variant skips stages 0 and 1; the variant's recipe must keep their fields."""
    source, out = Path(from_run), Path(out_dir)
    needed = [source / pretrain.TOWER_FILE, source / "state_stage1.safetensors"]
    missing = [str(f) for f in needed if not f.exists()]
    if missing:
        raise FileNotFoundError(f"cannot branch from {source}: {', '.join(missing)} missing (a run that finished "
                                f"stage 1 has both)")
    if (out / "state.safetensors").exists():
        raise FileExistsError(f"{out} already has a training state; branch into a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(needed[0], out / pretrain.TOWER_FILE)
    shutil.copyfile(needed[1], out / "state.safetensors")
    shutil.copyfile(needed[1], out / "state_stage1.safetensors")
    if (source / "recipe.json").exists():  # what the branch continues: the stage-2 fields may change (check_resume)
        shutil.copyfile(source / "recipe.json", out / "recipe.json")
    if (source / "log.jsonl").exists():  # the branch's log: the stages it shares (the resume drops the rest)
        shutil.copyfile(source / "log.jsonl", out / "log.jsonl")
    log(f"branched from {source} at the end of stage 1")


# fields a resumed run may change at any time (how it runs, not what it learns)
RESUME_FREE = ("threads", "save_every_s", "monitor_every")
# ... and those that only stage 2 reads: free while the run stands at the end of stage 1 (a branch)
STAGE2_FIELDS = ("stage2_steps", "stage2_lr", "lora_rank", "lora_alpha", "stage2_families", "caption_context")


def check_resume(out: Path, seed: int, recipe: Recipe, stored: dict | None) -> None:
    """A run resumed (or branched) into ``out`` continues what its state was trained with (``stored``: its
    recipe.json): the same seed (the data stream) and recipe, but for RESUME_FREE and, at the end of stage 1,
    STAGE2_FIELDS; anything else would mix two recipes in one checkpoint and label it with the second."""
    trained = ("state.safetensors", pretrain.STATE_FILE, pretrain.TOWER_FILE)
    if stored is None or not any((out / name).exists() for name in trained):
        return  # nothing trained yet (a start that failed at once): the corrected command runs here
    started = recipe_from_dict(stored["recipe"])
    hint = "train into a new --out (or pass --fresh to start this one over)"
    if stored.get("seed", 0) != seed:
        raise ValueError(f"{out} was trained with --seed {stored.get('seed', 0)}; resume it with that seed, or {hint}")
    state_file = out / "state.safetensors"
    at_branch_point = state_file.exists() and saved_step(state_file) == started.stage1_steps
    free = RESUME_FREE + (STAGE2_FIELDS if at_branch_point else ())
    before, after = dataclasses.asdict(started), dataclasses.asdict(recipe)
    changed = [k for k in before if before[k] != after[k] and k not in free]
    if changed:
        detail = ", ".join(f"{k} {before[k]!r} -> {after[k]!r}" for k in changed)
        where = ("" if at_branch_point else
                 f" (only {', '.join(RESUME_FREE)} may change mid-run; stage-2 fields at the end of stage 1, e.g. "
                 f"in a --branch-from)")
        raise ValueError(f"{out} was trained with another recipe ({detail}){where}; {hint}")


def train(out_dir, seed: int | None = None, minutes: float | None = None, recipe: Recipe | None = None,
          resume: bool = True, log=print, load_language_model=None, device: str = "cpu") -> Path:
    """Train (or resume) into ``out_dir``; at the end write the shippable checkpoint to ``out_dir/checkpoint``.

    ``minutes`` stops early (state saved; the same call resumes). ``resume=False`` starts over. ``device``:
    where to train ("cuda" for many more steps per minute; the state file is the same either way).
    ``load_language_model`` (tests): a callable returning ``(LlamaForCausalLM, tokenizer)`` instead of
    SmolLM2. ``seed`` None: the run's own (resumed) or 0. A resumed run refuses another seed or recipe
    (:func:`check_resume`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe_file = out / "recipe.json"
    if not resume:
        for name in ("state.safetensors", "state_stage1.safetensors", "state_pretrain.safetensors",
                     pretrain.TOWER_FILE, "log.jsonl", "recipe.json"):
            (out / name).unlink(missing_ok=True)
    stored = json.loads(recipe_file.read_text()) if recipe_file.exists() else None
    if stored is not None:  # a resumed run keeps the recipe and seed it started with
        recipe = recipe or recipe_from_dict(stored["recipe"])
        seed = seed if seed is not None else stored.get("seed", 0)
    recipe, seed = recipe or Recipe(), seed if seed is not None else 0
    check_resume(out, seed, recipe, stored)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return _train(out, seed, minutes, recipe, log, load_language_model, torch.device(device))
    finally:
        torch.set_num_threads(threads_before)


def _build(recipe: Recipe, seed: int, log, load_language_model=None, tower_file: Path | None = None):
    lm, tokenizer = load_language_model() if load_language_model else language_model.load(log)
    processor = build.make_processor(tokenizer)
    model = build.assemble(lm, processor, recipe.vision, seed=seed)
    if tower_file is not None and tower_file.exists():
        model.model.vision_tower.load_state_dict(load_file(tower_file))
    for p in model.model.language_model.parameters():
        p.requires_grad_(False)
    if recipe.freeze_tower and recipe.pretrain_steps > 0:
        for p in model.model.vision_tower.parameters():
            p.requires_grad_(False)
    return model, processor


def _optimizer(model, lr):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def _train(out: Path, seed: int, minutes, recipe: Recipe, log, load_language_model, device: torch.device) -> Path:
    recipe_file = out / "recipe.json"
    recipe_file.write_text(json.dumps({"seed": seed, "recipe": dataclasses.asdict(recipe)}, indent=1))
    this_call = time.time()  # --minutes counts from here, so the same command resumes for as long again
    if recipe.pretrain_steps > 0 and not (out / pretrain.TOWER_FILE).exists():
        if not pretrain.run(out, seed, recipe, log, device, deadline=_deadline(this_call, minutes)):
            log(f"stopped in stage 0 after {minutes} min; the same command resumes")
            return out
    model, processor = _build(recipe, seed, log, load_language_model, out / pretrain.TOWER_FILE)
    model.to(device)
    state_file = out / "state.safetensors"
    step, elapsed = 0, 0.0
    saved = _read_state(state_file) if state_file.exists() else None
    if saved is not None and _is_stage2(saved["weights"]):
        model = add_lora(model, recipe, seed)
    optimizer = _optimizer(model, recipe.lr)
    if saved is not None:
        step, elapsed = saved["step"], saved["elapsed"]
        missing = _load_trainable(model, saved["weights"])
        if missing:
            raise RuntimeError(f"{state_file} lacks {len(missing)} trainable tensors (e.g. {missing[0]}); "
                               f"it was written by another recipe: train into a new --out folder")
        optimizer.load_state_dict(saved["optimizer"])
        log(f"resumed at step {step} ({elapsed / 60:.1f} min)")
        drop_rows_after(out / "log.jsonl", step, stages=(1, 2, None))

    encoder = data.Encoder(processor.tokenizer)
    targets = (WordTargets(model, processor.tokenizer, recipe.word_places)
               if recipe.projector_words > 0 or recipe.projector_fit_steps > 0 else None)
    words = targets if recipe.projector_words > 0 else None  # in the training loss
    monitor_scenes = scenes.sample("validation", 16, seed=seed)
    total = recipe.stage1_steps + recipe.stage2_steps
    start, last_save = time.time() - elapsed, time.time()
    with open(out / "log.jsonl", "a") as log_file:
        if step == 0 and recipe.projector_fit_steps > 0:  # seconds: no language model in the loop
            for record in fit_projector(model, targets, recipe, seed):
                log_file.write(json.dumps(record) + "\n")
            log(f"projector fitted to the word targets: {record}")
        if step == 0:  # the starting point: the (pretrained) tower behind a fresh projector
            summary = monitor(model, processor, monitor_scenes, recipe)
            summary.update(step=0, stage=1, loss=None, min=0.0)
            log_file.write(json.dumps({"monitor": summary}) + "\n")
        while step < total:
            if step >= recipe.stage1_steps and not _has_lora(model):
                if step == recipe.stage1_steps:
                    _save(state_file, model, optimizer, step, time.time() - start)  # stage 1's result, kept aside
                    shutil.copyfile(state_file, out / "state_stage1.safetensors")
                model = add_lora(model, recipe, seed)
                optimizer = _optimizer(model, recipe.stage2_lr)
                log(f"stage 2 from step {step}: LoRA rank {recipe.lora_rank} on the language model")
            rng = np.random.default_rng([seed, step])  # one stream per step: reproducible across resumes
            stage2 = step >= recipe.stage1_steps
            batch = encoder.batch(rng, [scenes.make_scene(rng) for _ in range(recipe.batch_size)],
                                  max_turns=recipe.max_turns,
                                  families=recipe.stage2_families if stage2 else None,
                                  weights=recipe.family_weights, caption_last=recipe.caption_last,
                                  context=recipe.caption_context if stage2 else 0.0, patch_labels=words is not None)
            batch = {k: v.to(device) for k, v in batch.items()}
            lr = lr_at(recipe, step)
            loss = _train_step(model, optimizer, batch, lr, recipe, words)
            step += 1
            if step == 1 or step % 10 == 0:
                record = {"step": step, "loss": round(loss.item(), 4), "lr": lr,
                          "min": round((time.time() - start) / 60, 2)}
                if words is not None:
                    record["words"] = round(words.last.item(), 4)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if step % recipe.monitor_every == 0 or step == total:
                summary = monitor(model, processor, monitor_scenes, recipe)
                summary.update(step=step, stage=2 if step > recipe.stage1_steps else 1, loss=round(loss.item(), 4),
                               min=round((time.time() - start) / 60, 2))
                log_file.write(json.dumps({"monitor": summary}) + "\n")
                log_file.flush()
                log(format_monitor(summary))
            timed_out = minutes is not None and time.time() - this_call > minutes * 60
            if time.time() - last_save > recipe.save_every_s or step == total or timed_out:
                _save(state_file, model, optimizer, step, time.time() - start)
                last_save = time.time()
            if timed_out:
                log(f"stopped at step {step} after {minutes} min; the same command resumes")
                return out
    return export(out, out / "checkpoint", model=model, log=log)


def _deadline(call_start: float, minutes) -> float | None:
    return None if minutes is None else call_start + minutes * 60


def _train_step(model, optimizer, batch: dict, lr: float, recipe: Recipe, words=None) -> torch.Tensor:
    """One AdamW step on the answers' cross-entropy (bfloat16 autocast, float32 master weights), plus
    ``recipe.projector_words`` times the word-target loss when ``words`` is given."""
    if words is None:
        loss_fn = lambda: model(**batch).loss  # noqa: E731
    else:
        inputs = {k: v for k, v in batch.items() if k != "patch_labels"}
        loss_fn = lambda: words.add_loss(model, inputs, batch["patch_labels"], recipe.projector_words)  # noqa: E731
    return optimizer_step(model, optimizer, loss_fn, lr, recipe, batch["input_ids"].device.type)


def fit_projector(model, words: "WordTargets", recipe: Recipe, seed: int):
    """Warm start of the projector toward the word targets (``recipe.projector_fit_steps`` AdamW steps of
    ``recipe.pretrain_batch`` fresh training scenes at ``recipe.lr``, the frozen tower's features in, no
    language model): the alignment stages then start from visual tokens that already sit near their words.
    Yields a log record before the first step, every 50 steps and at the end, with the held-out word error."""
    from .pretrain import patch_labels

    tower, projector = _base(model).model.vision_tower, _base(model).model.multi_modal_projector
    device = next(projector.parameters()).device
    optimizer = torch.optim.AdamW(projector.parameters(), lr=recipe.lr, weight_decay=0.0)

    def batch(scene_list):
        with torch.no_grad():  # the tower is frozen here: its features once per batch, no graph
            features = build.patch_features(tower, data.pixels([s.image for s in scene_list]).to(device))
        return features, data.patch_label_tensor([patch_labels(s) for s in scene_list]).to(device)

    held_out = batch(scenes.sample("validation", 64, seed=seed))

    def held_out_error() -> float:
        with torch.no_grad():
            return round(words.loss(projector(held_out[0]), held_out[1]).item(), 4)

    yield {"stage": "fit", "step": 0, "words": None, "held_out_words": held_out_error()}
    for step in range(1, recipe.projector_fit_steps + 1):
        rng = np.random.default_rng([seed, 1_000_000 + step])  # a stream of its own, apart from stage 1's
        features, labels = batch([scenes.make_scene(rng) for _ in range(recipe.pretrain_batch)])
        loss = optimizer_step(projector, optimizer, lambda: words.loss(projector(features), labels),
                              recipe.lr, recipe, device.type)
        if step % 50 == 0 or step == recipe.projector_fit_steps:
            yield {"stage": "fit", "step": step, "words": round(loss.item(), 4), "held_out_words": held_out_error()}


class WordTargets:
    """The projector's targets in the language model's word-embedding space (``recipe.projector_words``): the
    visual token of a patch that shows a red circle should sit near ``embed(" red") + embed(" circle")``, the
    words a caption uses for it, so that the language model can read it with what it does on text (told the
    caption, it learns to answer "what color is the circle ?" within 50 LoRA steps; from the visual tokens
    it had not in 1000). With ``places`` the target also says where the object's centre lies, in words the
    language model compares easily: ``(1 - x) * embed(" left") + x * embed(" right")`` and the same with
    " top" / " bottom", x and y the centre's grid column and row scaled to 0..1. Background patches have no
    target. This shapes where visual tokens land in the embedding space; it never touches the language
    model's hidden states or attention."""

    def __init__(self, model, tokenizer, places: bool = False):
        embed = model.get_input_embeddings().weight.detach()  # (vocab, D), frozen

        def ids(words):
            return [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words]

        def table(words):  # (1 + len(words), D): row 0 (background) is never used
            return torch.cat([torch.zeros_like(embed[:1]), embed[ids(words)]]).float()

        self.shape, self.colour = table(scenes.SHAPES), table(scenes.COLORS)
        self.places = embed[ids(("left", "right", "top", "bottom"))].float() if places else None  # (4, D)
        self.last = torch.tensor(float("nan"))  # the last loss, detached (read when logged: no sync per step)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """(N, 3) shape, colour, centre cell of object patches -> (N, D) their target vectors."""
        device = labels.device
        target = self.shape.to(device)[labels[:, 0]] + self.colour.to(device)[labels[:, 1]]
        if self.places is not None:
            grid = scenes.IMAGE_SIZE // build.PATCH_SIZE
            x = (labels[:, 2] % grid).float() / (grid - 1)                # (N,) 0 = left column, 1 = right
            y = (labels[:, 2] // grid).float() / (grid - 1)               # (N,) 0 = top row, 1 = bottom
            weights = torch.stack([1 - x, x, 1 - y, y], dim=-1)            # (N, 4)
            target = target + weights @ self.places.to(device)
        return target

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean squared distance of the object patches' visual tokens (B, 64, D) to their targets (``labels``:
        (B, 64, 3) from :func:`.data.patch_label_tensor`), relative to the targets' mean square (1.0 = as far as
        a zero vector)."""
        on_object = labels[..., 0] > 0                                    # (B, 64)
        if not on_object.any():
            return tokens.sum() * 0.0
        target = self.targets(labels[on_object])                          # (N, D)
        error = (tokens[on_object].float() - target).pow(2).sum(-1).mean() / target.pow(2).sum(-1).mean()
        self.last = error.detach()
        return error

    def add_loss(self, model, inputs: dict, labels: torch.Tensor, weight: float) -> torch.Tensor:
        """The model's answer loss on ``inputs`` plus ``weight`` times :meth:`loss` on the projector's output."""
        captured = []
        handle = _base(model).model.multi_modal_projector.register_forward_hook(
            lambda m, i, out: captured.append(out))
        try:
            answers = model(**inputs).loss
        finally:
            handle.remove()
        return answers + weight * self.loss(captured[0], labels)


def optimizer_step(module, optimizer, loss_fn, lr: float, recipe: Recipe, device_type: str) -> torch.Tensor:
    """One AdamW step on ``loss_fn()`` (bfloat16 autocast, float32 master weights, gradient clipping)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    module.train()
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=recipe.bf16_autocast):
        loss = loss_fn()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], recipe.grad_clip)
    optimizer.step()
    return loss


def export(run_dir, out_dir, model=None, log=print, load_language_model=None) -> Path:
    """Write the shippable files of a run (vision tower, projector, LoRA adapter, configs) to ``out_dir``."""
    run, out = Path(run_dir), Path(out_dir)
    fields = json.loads((run / "recipe.json").read_text())
    recipe = recipe_from_dict(fields["recipe"])
    if model is None:
        model, _ = _build(recipe, fields["seed"], log, load_language_model, run / pretrain.TOWER_FILE)
        saved = _read_state(run / "state.safetensors")
        if _is_stage2(saved["weights"]):
            model = add_lora(model, recipe, fields["seed"])
        _load_trainable(model, saved["weights"])
    out.mkdir(parents=True, exist_ok=True)
    save_file(build.trained_state(_base(model)), out / "vision.safetensors")
    if _has_lora(model):
        from peft import get_peft_model_state_dict
        # float16 halves the package (rank-16 adapters on 210 projections: 4.9 M numbers); the fold at load
        # adds them to the float32 weights, and the shipped numbers are measured on exactly these values
        lora = {k: v.detach().cpu().to(torch.float16).contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(lora, out / "lora.safetensors")
    (out / "organism.json").write_text(json.dumps({
        "vision": dataclasses.asdict(recipe.vision),
        "lora": lora_config_dict(recipe) if _has_lora(model) else None,
        "language_model": language_model.GGUF_FILE,
        "recipe": dataclasses.asdict(recipe), "seed": fields["seed"],
    }, indent=1))
    log(f"wrote {out}")
    return out


def _is_stage2(weights: dict) -> bool:
    return any("lora_" in name for name in weights)


def _has_lora(model) -> bool:
    return hasattr(model, "peft_config")


def _base(model):
    """The LlavaForConditionalGeneration inside a LoRA-wrapped model (or the model itself)."""
    return model.get_base_model() if _has_lora(model) else model


def _load_trainable(model, weights: dict[str, torch.Tensor]) -> list[str]:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    with torch.no_grad():
        for name, value in weights.items():
            if name in params:
                params[name].copy_(value)
    return missing


@torch.no_grad()
def monitor(model, processor, monitor_scenes, recipe: Recipe) -> dict:
    """Measure (never train on) the sink, per layer, on one question about each validation scene: phi on the
    sink dim (BOS, text median, visual median / 99th percentile / max, share of visual tokens above
    ``sink_tau``) and, from an eager forward, the attention the text queries after the image give BOS, all
    visual tokens, the most-attended visual token and the first (top-left) one; plus the first answer token's
    accuracy. The emergence figure (:mod:`.emergence`) plots these records."""
    from . import build_inputs
    from .measure import eager

    questions = [s.questions[k % len(s.questions)] for k, s in enumerate(monitor_scenes)]
    device = next(model.parameters()).device
    inputs = build_inputs(processor, [s.image for s in monitor_scenes], [q[0] for q in questions]).to(device)
    model.eval()
    with eager(model):
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    visual = ids == processor.tokenizer.convert_tokens_to_ids(build.IMAGE)
    bos = mask & (mask.cumsum(1) == 1)
    text = mask & ~visual & ~bos
    queries = text & (visual.cumsum(1) > 0)  # text tokens after the image: the queries VAR redistributes for
    first = [processor.tokenizer(q[1], add_special_tokens=False)["input_ids"][0] for q in questions]
    accuracy = (out.logits[:, -1].argmax(-1).cpu() == torch.tensor(first)).float().mean().item()
    visual_at = visual.nonzero()[:, 1].view(len(ids), -1)  # (B, V): key positions of the visual tokens
    layers = []
    for layer, x in enumerate(out.hidden_states[:-1]):  # hidden_states[l] enters layer l
        x = x.float()
        phi = x[..., recipe.sink_dim].abs() / x.pow(2).mean(-1).add(1e-6).sqrt()  # (B, T)
        pv = phi[visual]
        rows = out.attentions[layer].float().mean(1)  # (B, T, T), heads averaged
        to_visual = rows.gather(2, visual_at[:, None, :].expand(-1, rows.shape[1], -1))[queries]  # (Q, V)
        layers.append({"l": layer, "bos": round(phi[bos].mean().item(), 2),
                       "text_med": round(phi[text].median().item(), 2),
                       "vis_med": round(pv.median().item(), 2), "vis_p99": round(pv.quantile(0.99).item(), 2),
                       "vis_max": round(pv.max().item(), 2),
                       "vis_sinks": round((pv > recipe.sink_tau).float().mean().item(), 4),
                       "att_bos": round((rows * bos[:, None, :]).sum(-1)[queries].mean().item(), 4),
                       "att_visual": round(to_visual.sum(-1).mean().item(), 4),
                       "att_top_visual": round(to_visual.max(-1).values.mean().item(), 4),
                       "att_first_visual": round(to_visual[:, 0].mean().item(), 4)})
    return {"layers": layers, "first_token_acc": round(accuracy, 3), "sink_tau": recipe.sink_tau}


def format_monitor(summary: dict) -> str:
    head = (f"step {summary['step']} loss {summary['loss']} ({summary['min']} min) "
            f"first-token accuracy {summary['first_token_acc']}")
    rows = [f"  L{e['l']:>2} bos={e['bos']} text_med={e['text_med']} vis_med={e['vis_med']} "
            f"vis_max={e['vis_max']} vis>tau={e['vis_sinks']}" for e in summary["layers"] if e["l"] % 4 == 2]
    return "\n".join([head, *rows])
