"""Stage 0: the organism's vision tower pretrained on its own, without the language model in the loop.

Real LLaVA starts from a CLIP tower that was trained on its own, cheaply per image; this stage does the same
on the synthetic scenes (thousands of images a minute on two CPU cores), so that the alignment stages only
have to *align* what the tower already sees. Objectives, all on the tower's last hidden state (the features
LLaVA's projector reads, ``vision_feature_layer=-1``, CLS dropped):

- **CLIP-style contrast** of the image (mean of its patch tokens) with the scene's description ("a red
  circle at the top left , ...") read by a small CLIP text encoder (transformers' ``CLIPTextModel``) over the
  descriptions' word vocabulary, with CLIP's symmetric cross-entropy and learned temperature;
- **dense labels** per patch: whether an object's box covers at least a quarter of the patch, and on those
  object patches the object's shape and colour (so every patch of an object must know the whole object: shape
  identity is not visible in one 8x8 corner; these losses are averaged over object patches only, so that the
  easy background patches, about three quarters, do not dilute them); with ``recipe.pretrain_place`` also
  where its centre lies (column and row of the 8x8 grid: "left of" / "above" need the object's place in the
  token itself, not only in its sequence position);
- **scene labels** from the mean patch token: which shapes are present (multi-label) and the object count;
  with ``recipe.pretrain_bind`` also which (shape, colour) pairs are present (multi-label) and, for each
  shape present once, where its centre lies as thermometer codes ("the circle's centre is in column k or
  further right", k = 1..7, and the same for rows). The language model reads the shapes present and the count
  well from its visual tokens (they are in their mean), but not which colour or place belongs to which shape;
  these labels put those bindings in the mean too, in a form where "is the A left of the B" is a sum of
  the two shapes' codes (a first version predicted the relations themselves from the mean: it stayed at
  chance, loss ln 2, for 2250 steps). The codes are learned only with ``pretrain_place`` on too (without it
  they stayed at the prior for 1250 steps): the per-patch place targets bring the place into the last layer.

The heads and the text encoder are thrown away after this stage; only the tower goes on. Nothing here touches
the language model.

    >>> from vasink.organism import pretrain
    >>> batch = pretrain.targets(scenes.sample("train", 4))        # per-patch labels, counts, captions
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import build, data, scenes

WORDS = ("<pad>", "<eos>", "a", "and", ",", ".", "at", "the", "top", "middle", "bottom", "left", "center",
         "right", *scenes.SHAPES, *scenes.COLORS)
PAD, EOS = 0, 1
MAX_WORDS = 48                       # a 4-object description is 4 * 9 + 4 = 40 words
BACKGROUND = 0                       # class 0 of the shape and colour heads; the shapes / colours are 1..8
MIN_COVER = build.PATCH_SIZE ** 2 // 4  # a patch belongs to an object's box when it covers >= 1/4 of the patch
GRID = scenes.IMAGE_SIZE // build.PATCH_SIZE
_WORD_ID = {w: i for i, w in enumerate(WORDS)}


def description_ids(scene: scenes.Scene) -> list[int]:
    return [_WORD_ID[w] for w in scene.description().split()] + [EOS]


def patch_labels(scene: scenes.Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shape, colour, centre)`` per patch, row-major as the visual tokens: (GRID*GRID,) each. Shape and colour
    are classes, 0 = background; ``centre`` is the grid cell (row * GRID + column) of the covering object's box
    centre, -1 on background."""
    shape = np.zeros((GRID, GRID), dtype=np.int64)
    colour = np.zeros((GRID, GRID), dtype=np.int64)
    centre = np.full((GRID, GRID), -1, dtype=np.int64)
    cover = np.zeros((GRID, GRID), dtype=np.int64)
    p = build.PATCH_SIZE
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        for r in range(GRID):
            for c in range(GRID):
                area = (max(0, min(y1, (r + 1) * p) - max(y0, r * p))
                        * max(0, min(x1, (c + 1) * p) - max(x0, c * p)))
                if area >= MIN_COVER and area > cover[r, c]:
                    cover[r, c] = area
                    shape[r, c] = 1 + scenes.SHAPES.index(obj.shape)
                    colour[r, c] = 1 + list(scenes.COLORS).index(obj.color)
                    cx, cy = obj.center
                    centre[r, c] = min(int(cy) // p, GRID - 1) * GRID + min(int(cx) // p, GRID - 1)
    return shape.reshape(-1), colour.reshape(-1), centre.reshape(-1)


AXES = 2                             # columns (x), rows (y)


def binding_labels(scene: scenes.Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pairs, places, place_mask)``: which (shape, colour) pairs the scene holds, (8 * 8,) indexed
    shape * 8 + colour; and per axis (column, row), shape and k = 1..GRID-1 whether the shape's centre lies in
    grid cell k or beyond, (2 * 8 * 7,) indexed (axis * 8 + shape) * 7 + k - 1, defined (mask 1) only for the
    shapes present once (a repeated shape has no single place; the spatial questions ask only about those).
    Two shapes whose centres are 8 px apart on an axis sit in different cells, so their codes order them."""
    n_shapes, n_colours = len(scenes.SHAPES), len(scenes.COLORS)
    pairs = np.zeros(n_shapes * n_colours, dtype=np.float32)
    places = np.zeros((AXES, n_shapes, GRID - 1), dtype=np.float32)
    mask = np.zeros_like(places)
    for obj in scene.objects:
        pairs[scenes.SHAPES.index(obj.shape) * n_colours + list(scenes.COLORS).index(obj.color)] = 1.0
    shapes = [o.shape for o in scene.objects]
    for obj in scene.objects:
        if shapes.count(obj.shape) == 1:
            for axis in range(AXES):
                cell = min(int(obj.center[axis]) // build.PATCH_SIZE, GRID - 1)
                places[axis, scenes.SHAPES.index(obj.shape)] = np.arange(1, GRID) <= cell
                mask[axis, scenes.SHAPES.index(obj.shape)] = 1.0
    return pairs, places.reshape(-1), mask.reshape(-1)


def targets(scene_list: list[scenes.Scene]) -> dict[str, torch.Tensor]:
    """Pixel values and every pretraining target of a batch of scenes."""
    labels = [patch_labels(s) for s in scene_list]
    captions = [description_ids(s) for s in scene_list]
    width = max(len(c) for c in captions)
    caption_ids = torch.full((len(scene_list), width), PAD, dtype=torch.long)
    for row, ids in enumerate(captions):
        caption_ids[row, :len(ids)] = torch.tensor(ids)
    presence = torch.zeros((len(scene_list), len(scenes.SHAPES)))
    bindings = [binding_labels(s) for s in scene_list]
    for row, s in enumerate(scene_list):
        for o in s.objects:
            presence[row, scenes.SHAPES.index(o.shape)] = 1.0
    return {
        "pixel_values": data.pixels([s.image for s in scene_list]),              # (B, 3, 64, 64)
        "patch_shape": torch.from_numpy(np.stack([lab[0] for lab in labels])),  # (B, 64)
        "patch_colour": torch.from_numpy(np.stack([lab[1] for lab in labels])),  # (B, 64)
        "patch_centre": torch.from_numpy(np.stack([lab[2] for lab in labels])),  # (B, 64), -1 on background
        "count": torch.tensor([len(s.objects) for s in scene_list]),            # (B,)
        "presence": presence,                                                    # (B, 8)
        "caption_ids": caption_ids,                                              # (B, L)
        "pairs": torch.from_numpy(np.stack([b[0] for b in bindings])),          # (B, 64) shape x colour
        "places": torch.from_numpy(np.stack([b[1] for b in bindings])),         # (B, 112) axis x shape x k
        "place_mask": torch.from_numpy(np.stack([b[2] for b in bindings])),     # (B, 112)
    }


class Pretrainer(nn.Module):
    """The tower plus this stage's heads and text encoder (which are discarded afterwards)."""

    def __init__(self, tower: nn.Module, width: int, text_width: int = 128, place: bool = False,
                 bind: bool = False):
        from transformers import CLIPTextConfig, CLIPTextModel

        super().__init__()
        self.tower = tower
        self.norm = nn.LayerNorm(width)
        self.object_head = nn.Linear(width, 1)
        self.shape_head = nn.Linear(width, len(scenes.SHAPES) + 1)
        self.colour_head = nn.Linear(width, len(scenes.COLORS) + 1)
        self.place = place
        if place:  # created here, between the colour and count heads, only when asked: the seeded init of the
            # heads after them (and so the shipped tower) does not change when the place targets are off
            self.column_head = nn.Linear(width, GRID)   # the covering object's centre column, on object patches
            self.row_head = nn.Linear(width, GRID)      # ... and row
        self.count_head = nn.Linear(width, len(scenes.NUMBER_WORDS))
        self.presence_head = nn.Linear(width, len(scenes.SHAPES))
        self.text = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(WORDS), hidden_size=text_width, intermediate_size=4 * text_width, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=MAX_WORDS, pad_token_id=PAD, eos_token_id=EOS,
            bos_token_id=EOS, projection_dim=text_width))
        self.image_projection = nn.Linear(width, text_width, bias=False)
        self.text_projection = nn.Linear(text_width, text_width, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # CLIP's initial log(1 / 0.07)
        self.bind = bind
        if bind:  # created last, only when asked, so that the other heads' seeded init does not change
            self.pair_head = nn.Linear(width, len(scenes.SHAPES) * len(scenes.COLORS))
            self.place_code_head = nn.Linear(width, AXES * len(scenes.SHAPES) * (GRID - 1))

    def patch_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The features LLaVA's projector reads (:func:`.build.patch_features`). (B, 64, width)"""
        return build.patch_features(self.tower, pixel_values)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from transformers.models.clip.modeling_clip import image_text_contrastive_loss

        tokens = self.norm(self.patch_tokens(batch["pixel_values"]))  # (B, 64, width)
        pooled = tokens.mean(1)                                        # (B, width)
        ce = nn.functional.cross_entropy
        shape_logits, colour_logits = self.shape_head(tokens), self.colour_head(tokens)  # (B, 64, 9)
        count_logits, presence_logits = self.count_head(pooled), self.presence_head(pooled)
        text = self.text(input_ids=batch["caption_ids"],
                         attention_mask=(batch["caption_ids"] != PAD).long()).pooler_output  # (B, text_width)
        image_embed = nn.functional.normalize(self.image_projection(pooled), dim=-1)
        text_embed = nn.functional.normalize(self.text_projection(text), dim=-1)
        similarity = text_embed @ image_embed.T * self.logit_scale.clamp(max=4.6052).exp()  # (B_text, B_image)
        on_object = batch["patch_shape"] != BACKGROUND                 # (B, 64)
        parts = {
            "object": nn.functional.binary_cross_entropy_with_logits(
                self.object_head(tokens).squeeze(-1), on_object.float()),
            "shape": ce(shape_logits[on_object], batch["patch_shape"][on_object]),
            "colour": ce(colour_logits[on_object], batch["patch_colour"][on_object]),
        }
        if self.place:
            centre = batch["patch_centre"][on_object]                  # (N,) grid cell of the object's centre
            parts["place"] = (ce(self.column_head(tokens)[on_object], centre % GRID)
                              + ce(self.row_head(tokens)[on_object], centre // GRID))
        parts.update({
            "count": ce(count_logits, batch["count"]),
            "presence": nn.functional.binary_cross_entropy_with_logits(presence_logits, batch["presence"]),
            "contrast": image_text_contrastive_loss(similarity),
        })
        if self.bind:
            bce = nn.functional.binary_cross_entropy_with_logits
            # summed over the 64 pairs (mean over scenes): averaged, the 2-3 present ones would barely count
            parts["pairs"] = bce(self.pair_head(pooled), batch["pairs"], reduction="sum") / len(pooled)
            mask = batch["place_mask"]
            places = bce(self.place_code_head(pooled), batch["places"], weight=mask, reduction="sum")
            parts["places"] = places / len(pooled)  # summed over the defined codes (present-once shapes) only
        return sum(parts.values()), parts

    @torch.no_grad()
    def evaluate(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Held-out accuracies (patch labels on object patches, count, exact shape set, caption retrieval)
        and the tower's token norms (a ViT-born sink would show as a few tokens far above the median)."""
        self.eval()
        raw = self.patch_tokens(batch["pixel_values"])                 # (B, 64, width)
        tokens = self.norm(raw)
        pooled = tokens.mean(1)
        on_object = batch["patch_shape"] != BACKGROUND
        shape_ok = self.shape_head(tokens).argmax(-1) == batch["patch_shape"]
        colour_ok = self.colour_head(tokens).argmax(-1) == batch["patch_colour"]
        object_ok = (self.object_head(tokens).squeeze(-1) > 0) == on_object
        presence = (self.presence_head(pooled) > 0).float()
        text = self.text(input_ids=batch["caption_ids"],
                         attention_mask=(batch["caption_ids"] != PAD).long()).pooler_output
        similarity = (nn.functional.normalize(self.text_projection(text), dim=-1)
                      @ nn.functional.normalize(self.image_projection(pooled), dim=-1).T)
        norms = raw.norm(dim=-1)                                        # (B, 64)
        extra = {}
        if self.place:
            centre = batch["patch_centre"]
            place_ok = ((self.column_head(tokens).argmax(-1) == centre % GRID)
                        & (self.row_head(tokens).argmax(-1) == centre // GRID))
            extra["object_patch_place_acc"] = place_ok[on_object].float().mean().item()
        if self.bind:
            mask = batch["place_mask"].bool().view(len(pooled), AXES * len(scenes.SHAPES), GRID - 1)
            codes_ok = ((self.place_code_head(pooled) > 0) == batch["places"].bool()).view(mask.shape)
            extra.update({"pair_set_acc": ((self.pair_head(pooled) > 0) == batch["pairs"].bool()).all(-1)
                          .float().mean().item(),
                          # a shape's cell on one axis, all 7 codes right
                          "shape_cell_acc": codes_ok.all(-1)[mask[..., 0]].float().mean().item()})
        self.train()
        return {**extra,
            "object_patch_shape_acc": shape_ok[on_object].float().mean().item(),
            "object_patch_colour_acc": colour_ok[on_object].float().mean().item(),
            "objectness_acc": object_ok.float().mean().item(),
            "count_acc": (self.count_head(pooled).argmax(-1) == batch["count"]).float().mean().item(),
            "shape_set_acc": (presence == batch["presence"]).all(-1).float().mean().item(),
            "caption_retrieval_acc": (similarity.argmax(-1) == torch.arange(len(text))).float().mean().item(),
            "token_norm_median": norms.median().item(),
            "token_norm_max": norms.max().item(),
            "token_norm_max_over_median": (norms.max() / norms.median()).item(),
        }


TOWER_FILE = "tower.safetensors"     # stage 0's result in a run folder: the tower's weights, read by stages 1-2
STATE_FILE = "state_pretrain.safetensors"
EVAL_SCENES = 256


def make_tower(shape: build.VisionShape, seed: int) -> nn.Module:
    """A fresh CLIP vision tower of the organism's shape (the class and config LLaVA builds it from)."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    return AutoModel.from_config(build.vision_config(shape))


def run(out, seed: int, recipe, log, device: torch.device, deadline: float | None = None) -> bool:
    """Stage 0 into the run folder ``out``: resumes from its state file, logs to ``log.jsonl`` (records with
    ``"stage": 0``), writes :data:`TOWER_FILE` when done. Returns False when ``deadline`` (a ``time.time()``)
    stopped it first (state saved)."""
    import json
    import time
    from pathlib import Path

    from safetensors.torch import save_file

    from .state_file import drop_rows_after, read_state, save_state
    from .train import _cosine, optimizer_step

    out = Path(out)
    model = Pretrainer(make_tower(recipe.vision, seed), recipe.vision.width, place=recipe.pretrain_place,
                       bind=recipe.pretrain_bind).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.pretrain_lr, weight_decay=0.0)
    state_file, step, elapsed = out / STATE_FILE, 0, 0.0
    if state_file.exists():
        saved = read_state(state_file)
        model.load_state_dict(saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        step, elapsed = saved["step"], saved["elapsed"]
        log(f"stage 0 resumed at step {step} ({elapsed / 60:.1f} min)")
        drop_rows_after(out / "log.jsonl", step, stages=(0,))
    else:
        log(f"stage 0: the vision tower alone, {recipe.pretrain_steps} steps of {recipe.pretrain_batch} scenes")
    held_out = {k: v.to(device) for k, v in targets(scenes.sample("validation", EVAL_SCENES, seed=seed)).items()}
    start, last_save = time.time() - elapsed, time.time()
    every = max(1, recipe.pretrain_steps // 10)
    with open(out / "log.jsonl", "a") as log_file:
        while step < recipe.pretrain_steps:
            rng = np.random.default_rng([seed, step, 0])  # stage 0's own stream per step (stages 1-2: [seed, step])
            batch = {k: v.to(device) for k, v in
                     targets([scenes.make_scene(rng) for _ in range(recipe.pretrain_batch)]).items()}
            lr = _cosine(recipe, recipe.pretrain_lr, step, recipe.pretrain_steps)
            parts: dict = {}

            def loss_fn():
                total, found = model(batch)
                parts.update(found)
                return total

            loss = optimizer_step(model, optimizer, loss_fn, lr, recipe, device.type)
            step += 1
            record = {"stage": 0, "step": step, "loss": round(loss.item(), 4),
                      **{k: round(v.item(), 4) for k, v in parts.items()}, "min": round((time.time() - start) / 60, 2)}
            if step % every == 0 or step == recipe.pretrain_steps:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.bf16_autocast):
                    record["held_out"] = {k: round(v, 4) for k, v in model.evaluate(held_out).items()}
                log(f"stage 0 step {step} loss {record['loss']} ({record['min']} min) held-out {record['held_out']}")
            if step % 10 == 0 or "held_out" in record:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            stop = deadline is not None and time.time() > deadline
            if time.time() - last_save > recipe.save_every_s or stop or step == recipe.pretrain_steps:
                save_state(state_file, model, optimizer, step, time.time() - start)
                last_save = time.time()
            if stop and step < recipe.pretrain_steps:
                return False
    tower = {k: v.detach().cpu().contiguous() for k, v in model.tower.state_dict().items()}
    save_file(tower, out / (TOWER_FILE + ".tmp"))
    (out / (TOWER_FILE + ".tmp")).replace(out / TOWER_FILE)
    log(f"stage 0 done: {out / TOWER_FILE}")
    return True
