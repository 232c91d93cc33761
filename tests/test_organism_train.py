"""The training recipe runs, checkpoints as safetensors, resumes, and exports what the package ships
(a tiny random Llama with SmolLM2's tokenizer stands in for SmolLM2, so the test takes seconds)."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from vasink import organism
from vasink.organism import build, language_model
from vasink.organism.train import Recipe, export, recipe_from_dict, train


@pytest.fixture(scope="module")
def tokenizer():
    return language_model.load()[1]


@pytest.fixture
def tiny_lm(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    def load():
        torch.manual_seed(0)
        # vocab: SmolLM2's 49152 (not len(tokenizer): make_processor adds <image> to the tokenizer it is given)
        config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
        return LlamaForCausalLM(config).eval(), tokenizer
    return load


def _tiny(**overrides) -> Recipe:
    fields = dict(vision=build.VisionShape(width=16, layers=1, heads=2, mlp=32), pretrain_steps=2, pretrain_batch=4,
                  stage1_steps=2, stage2_steps=2,
                  batch_size=2, max_turns=2, warmup=1, monitor_every=2, lora_rank=2, sink_dim=3, threads=1,
                  bf16_autocast=False, projector_fit_steps=3)  # the rest as shipped
    fields.update(overrides)
    return Recipe(**fields)


def test_two_stages_write_a_loadable_checkpoint_and_are_reproducible(tmp_path, tiny_lm):
    ckpt_a = train(tmp_path / "a", seed=1, recipe=_tiny(), log=lambda _: None, load_language_model=tiny_lm)
    ckpt_b = train(tmp_path / "b", seed=1, recipe=_tiny(), log=lambda _: None, load_language_model=tiny_lm)
    for name in ("vision.safetensors", "lora.safetensors"):
        wa, wb = load_file(ckpt_a / name), load_file(ckpt_b / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    losses = [[json.loads(line)["monitor"]["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()
               if "monitor" in line] for run in ("a", "b")]
    assert len(losses[0]) == 3 and losses[0][0] is None and losses[0] == losses[1]
    lora = load_file(ckpt_a / "lora.safetensors")
    assert lora and all("language_model" in k and "lora_" in k for k in lora)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # stage 2 trained the adapter
    vision = load_file(ckpt_a / "vision.safetensors")
    assert vision and all(k.startswith(("model.vision_tower.", "model.multi_modal_projector.")) for k in vision)
    assert (tmp_path / "a" / "state_stage1.safetensors").exists()
    records = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    monitors = [r["monitor"] for r in records if "monitor" in r]
    assert [m["step"] for m in monitors] == [0, 2, 4] and [m["stage"] for m in monitors] == [1, 1, 2]
    assert len(monitors[0]["layers"]) == 2
    # the emergence log's format (docs/organism.md plots it): every layer record has these fields
    assert set(monitors[-1]["layers"][0]) == {"l", "bos", "text_med", "vis_med", "vis_p99", "vis_max", "vis_sinks",
                                              "att_bos", "att_visual", "att_top_visual", "att_first_visual"}
    layer = monitors[-1]["layers"][1]
    assert layer["vis_med"] <= layer["vis_p99"] <= layer["vis_max"] and 0 <= layer["vis_sinks"] <= 1
    assert 0 < layer["att_top_visual"] <= layer["att_visual"] <= 1 and layer["att_bos"] + layer["att_visual"] <= 1 + 1e-4
    stage0 = [r for r in records if r.get("stage") == 0]
    assert stage0[-1]["step"] == 2 and {"shape", "colour", "count", "presence", "contrast"} <= set(stage0[-1])
    assert {"count_acc", "object_patch_shape_acc", "token_norm_max_over_median"} <= set(stage0[-1]["held_out"])


def test_export_loads_with_the_adapter_folded_in(tmp_path, tiny_lm, monkeypatch):
    ckpt = train(tmp_path / "run", seed=0, recipe=_tiny(), log=lambda _: None, load_language_model=tiny_lm)
    monkeypatch.setattr(language_model, "load", lambda log=print: tiny_lm())
    model, processor = organism.load(ckpt)
    assert type(model).__name__ == "LlavaForConditionalGeneration"  # a plain LLaVA, no peft wrapper
    assert not any("lora" in name for name, _ in model.named_parameters())
    base, _ = tiny_lm()
    folded = model.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(folded, base.model.layers[0].self_attn.q_proj.weight)  # the adapter changed it
    vision = load_file(ckpt / "vision.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in vision.items())


def test_resume_continues_where_it_stopped(tmp_path, tiny_lm):
    run = tmp_path / "run"
    train(run, seed=0, recipe=_tiny(stage2_steps=0), log=lambda _: None, load_language_model=tiny_lm)
    from safetensors import safe_open
    with safe_open(run / "state.safetensors", "pt") as f:
        assert f.metadata()["step"] == "2"
    messages = []
    train(run, seed=0, recipe=_tiny(stage2_steps=1), log=messages.append, load_language_model=tiny_lm)
    assert any("resumed at step 2" in m for m in messages)
    with safe_open(run / "state.safetensors", "pt") as f:
        assert f.metadata()["step"] == "3"
    # a resumed run equals an uninterrupted one
    straight = train(tmp_path / "straight", seed=0, recipe=_tiny(stage2_steps=1), log=lambda _: None,
                     load_language_model=tiny_lm)
    a, b = load_file(run / "checkpoint" / "lora.safetensors"), load_file(straight / "lora.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_state_file_holds_no_pickle(tmp_path, tiny_lm):
    train(tmp_path / "run", seed=0, recipe=_tiny(stage2_steps=0), log=lambda _: None, load_language_model=tiny_lm)
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin"))
    state = load_file(tmp_path / "run" / "state.safetensors")
    assert any(k.startswith("optimizer/") and k.endswith("exp_avg") for k in state)


def test_stage_0_resumes_bit_for_bit_and_its_tower_goes_on(tmp_path, tiny_lm):
    from vasink.organism import pretrain

    run, messages = tmp_path / "run", []
    recipe = _tiny(pretrain_steps=3, stage1_steps=1, stage2_steps=0)
    train(run, seed=0, recipe=recipe, minutes=0.0, log=messages.append, load_language_model=tiny_lm)
    assert any("stopped in stage 0" in m for m in messages) and not (run / pretrain.TOWER_FILE).exists()
    train(run, seed=0, recipe=recipe, log=messages.append, load_language_model=tiny_lm)
    assert any("stage 0 resumed at step 1" in m for m in messages)
    train(tmp_path / "straight", seed=0, recipe=recipe, log=lambda _: None, load_language_model=tiny_lm)
    a, b = load_file(run / pretrain.TOWER_FILE), load_file(tmp_path / "straight" / pretrain.TOWER_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = pretrain.make_tower(recipe.vision, seed=0).state_dict()
    assert any(not torch.equal(fresh[k], a[k]) for k in a)  # stage 0 trained it
    # stages 1-2 start from that tower and keep it frozen (freeze_tower): the export holds it unchanged
    vision = load_file(run / "checkpoint" / "vision.safetensors")
    assert all(torch.equal(vision["model.vision_tower." + k], v) for k, v in a.items())


def test_patch_labels_mark_the_patches_an_object_box_covers():
    from vasink.organism import pretrain, scenes

    obj = scenes.SceneObject("star", "red", (8, 8, 20, 30))  # covers patch columns 1 (8 px) and 2 (4 px of 8)
    scene = scenes.Scene(image=None, objects=[obj])
    shape, colour, centre = pretrain.patch_labels(scene)
    grid = shape.reshape(8, 8)
    star = 1 + scenes.SHAPES.index("star")
    # rows 1-2 fully, row 3 by 6 px (>= 1/4 of the patch); column 1 fully, column 2 by 4 px x 8 = 32 px (1/2)
    assert grid[1:4, 1:3].tolist() == [[star, star]] * 3
    assert grid.sum() == star * 6 and (colour.reshape(8, 8)[1:4, 1:3] == 1 + list(scenes.COLORS).index("red")).all()
    # every covered patch names the box centre (14, 19): column 14 // 8 = 1, row 19 // 8 = 2; background -1
    assert set(centre[shape > 0].tolist()) == {2 * 8 + 1} and (centre[shape == 0] == -1).all()
    # a sliver of 1 px x 8 px = 8 px (< 16) does not count
    edge = scenes.Scene(image=None, objects=[scenes.SceneObject("bar", "blue", (15, 0, 24, 8))])
    assert pretrain.patch_labels(edge)[0].reshape(8, 8)[0].tolist() == [0, 0, 1 + scenes.SHAPES.index("bar")] + [0] * 5


def test_export_of_a_stopped_run(tmp_path, tiny_lm):
    run = tmp_path / "run"
    train(run, seed=0, recipe=_tiny(pretrain_steps=0, stage1_steps=50), minutes=0.0, log=lambda _: None,
          load_language_model=tiny_lm)
    out = export(run, tmp_path / "export", log=lambda _: None, load_language_model=tiny_lm)
    assert (out / "vision.safetensors").exists() and not (out / "lora.safetensors").exists()
    assert json.loads((out / "organism.json").read_text())["lora"] is None


def _fake_log(folder, n_layers=30):
    folder.mkdir(parents=True)
    lines = [json.dumps({"stage": 0, "step": s, "loss": 1.0, "held_out": {
        "object_patch_shape_acc": s / 10, "count_acc": 0.5, "caption_retrieval_acc": 0.2,
        "token_norm_max_over_median": 2.0}}) for s in (5, 10)]
    for step, stage in ((0, 1), (50, 1), (100, 2)):
        layers = [{"l": l, "bos": 20.0, "text_med": 12.0, "vis_med": float(l), "vis_p99": l + 1.0, "vis_max": l + 2.0,
                   "vis_sinks": 0.01 * (l >= 20), "att_bos": 0.5, "att_visual": 0.2, "att_top_visual": 0.05,
                   "att_first_visual": 0.01} for l in range(n_layers)]
        lines.append(json.dumps({"monitor": {"layers": layers, "first_token_acc": 0.5, "sink_tau": 17.5,
                                             "step": step, "stage": stage, "loss": None, "min": 0.0}}))
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "recipe.json").write_text(json.dumps({"seed": 0, "recipe": {"stage1_steps": 60}}))
    return folder


def test_emergence_bands_average_their_layers():
    from vasink.organism import emergence

    assert {k: (r.start, r.stop) for k, r in emergence.bands(30).items()} == {
        "early": (2, 11), "middle": (11, 21), "late": (21, 30)}
    monitors = [{"layers": [{"vis_med": float(l)} for l in range(30)]}]
    series = emergence.band_series(monitors, "vis_med")
    assert series["early"][0] == pytest.approx(6.0) and series["late"][0] == pytest.approx(25.0)


def test_the_documented_emergence_table_is_the_shipped_runs_log(capsys):
    """docs/organism.md's emergence table is `emergence --table` of the shipped run's kept log, row for row."""
    from pathlib import Path

    from vasink.organism import emergence

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "organism.md").read_text().splitlines()
    header = next(line for line in docs if line.startswith("| step | stage | first-token accuracy"))
    rows = docs[docs.index(header) + 2:]
    rows = rows[:next(k for k, line in enumerate(rows) if not line.startswith("|"))]
    steps = ",".join(line.split("|")[1].strip() for line in rows)
    assert emergence.main([str(root / "docs" / "organism" / "shipped-run"), "--table", steps]) == 0
    assert capsys.readouterr().out.splitlines() == [header, docs[docs.index(header) + 1], *rows]
    with pytest.raises(SystemExit):
        emergence.main([str(root / "docs" / "organism" / "shipped-run"), "--table", "ten"])


def test_emergence_figure_is_drawn_by_its_documented_command(tmp_path):
    from PIL import Image

    from vasink.organism import emergence

    a, b = _fake_log(tmp_path / "a"), _fake_log(tmp_path / "b")
    out = tmp_path / "fig.png"
    assert emergence.main([f"base={a}", str(b), "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 800
    log = emergence.read_log(a)
    assert [r["step"] for r in log["stage0"]] == [5, 10] and [m["step"] for m in log["monitor"]] == [0, 50, 100]
    assert log["stage2_from"] == 60
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "log.jsonl").write_text('{"monitor": \n')
    with pytest.raises(ValueError, match="line 1: not JSON"):
        emergence.read_log(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="vasink organism train"):
        emergence.read_log(tmp_path / "missing")


def test_recipe_variants_are_set_from_text_with_clear_refusals():
    from vasink.organism.train import recipe_with

    recipe = recipe_with(Recipe(), {"lora_rank": "64", "vision.layers": "6", "freeze_tower": "false",
                                    "stage2_lr": "1e-4", "stage2_families": "caption, counting"})
    assert (recipe.lora_rank, recipe.vision.layers, recipe.freeze_tower, recipe.stage2_lr) == (64, 6, False, 1e-4)
    assert recipe.stage2_families == ("caption", "counting") and Recipe().lora_rank == 16
    with pytest.raises(ValueError, match="unknown recipe field 'lora_rnak'.*lora_rank"):
        recipe_with(Recipe(), {"lora_rnak": "4"})
    with pytest.raises(ValueError, match="lora_rank takes a int, got 'big'"):
        recipe_with(Recipe(), {"lora_rank": "big"})
    with pytest.raises(ValueError, match="unknown question family"):
        recipe_with(Recipe(), {"stage2_families": "captions"})
    assert recipe_with(Recipe(), {"family_weights": "spatial=2, counting=0.5"}).family_weights == {
        "spatial": 2.0, "counting": 0.5}
    assert recipe_with(Recipe(), {"family_weights": "none"}).family_weights == {}
    for bad, message in (("colour=2", "unknown question family 'colour'"), ("spatial=x", "FAMILY=NUMBER"),
                         ("spatial=0", "must be positive")):
        with pytest.raises(ValueError, match=message):
            recipe_with(Recipe(), {"family_weights": bad})
    # a run written before the field existed resumes as it started: every family weighs 1
    old = dataclasses.asdict(recipe_with(Recipe(), {"family_weights": "attribute=4", "caption_last": "true"}))
    del old["family_weights"], old["caption_last"]
    assert recipe_from_dict(old).family_weights == {} and not recipe_from_dict(old).caption_last


def test_a_recorded_recipe_is_read_back_for_a_rerun(tmp_path, tiny_lm):
    from vasink.organism.train import recipe_file

    recipe = _tiny(stage2_steps=1, family_weights={"spatial": 3.0}, caption_context=0.25)
    ckpt = train(tmp_path / "run", seed=0, recipe=recipe, log=lambda _: None, load_language_model=tiny_lm)
    assert recipe_file(tmp_path / "run" / "recipe.json") == recipe
    assert recipe_file(ckpt / "organism.json") == recipe
    assert recipe_file(organism.CHECKPOINT_DIR / "organism.json") == Recipe()


def test_every_documented_runs_recipe_reads_back_as_it_ran():
    """docs/organism.md reproduces each kept run with --recipe docs/organism/RUN/recipe.json: runs written before a
    field existed read back with the value they ran with, not today's default."""
    from pathlib import Path

    from vasink.organism.train import recipe_file

    folders = sorted((Path(__file__).resolve().parents[1] / "docs" / "organism").glob("*/recipe.json"))
    recipes = {f.parent.name: recipe_file(f) for f in folders}
    assert {"shipped-run", "previous-shipped", "bind", "words"} <= set(recipes)
    assert recipes["shipped-run"] == Recipe()
    old = recipes["previous-shipped"]
    assert (old.projector_words, old.caption_context, old.family_weights, old.pretrain_bind) == (0.0, 0.0, {}, False)
    assert recipes["words"].projector_words == 1.0 and not recipes["words"].word_places


def test_the_default_recipe_is_the_shipped_checkpoints():
    """`vasink organism train` with no --set reproduces what ships: its defaults are the recipe the shipped
    checkpoint records (fields added since then take the values that run had)."""
    shipped = json.loads((organism.CHECKPOINT_DIR / "organism.json").read_text())["recipe"]
    assert recipe_from_dict(shipped) == Recipe()


def test_a_stage_2_variant_branches_from_another_runs_stage_1(tmp_path, tiny_lm):
    from vasink.organism import pretrain
    from vasink.organism.train import branch

    base = train(tmp_path / "base", seed=0, recipe=_tiny(stage2_steps=1), log=lambda _: None,
                 load_language_model=tiny_lm)
    with pytest.raises(FileNotFoundError, match="state_stage1.safetensors missing"):
        branch(tmp_path / "nowhere", tmp_path / "x")
    messages = []
    branch(tmp_path / "base", tmp_path / "variant", log=messages.append)
    variant = train(tmp_path / "variant", seed=0, recipe=_tiny(stage2_steps=1, lora_rank=4,
                                                               stage2_families=("caption",)),
                    log=messages.append, load_language_model=tiny_lm)
    assert any("resumed at step 2" in m for m in messages)  # stages 0-1 were not repeated
    # its log: the base's stages 0-1 (up to its first stage-2 row), then the variant's stage 2
    base_rows = [json.loads(line) for line in (tmp_path / "base" / "log.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "variant" / "log.jsonl").read_text().splitlines()]
    shared = next(k for k, row in enumerate(base_rows) if row.get("monitor", row).get("stage") == 2
                  or ("stage" not in row and "loss" in row and row["step"] > 2))
    assert shared > 0 and rows[:shared] == base_rows[:shared]
    assert {row.get("stage") for row in rows[:shared]} >= {0, "fit"}
    assert all(row.get("monitor", row).get("stage", 2) == 2 and row.get("step", row.get("monitor", {}).get("step")) > 2
               for row in rows[shared:]) and len(rows) > shared

    def kinds(tail):  # (kind, step) of each row: the same schedule, so the same rows as the base's stage 2, once
        return [("monitor" in row, row.get("monitor", row)["step"]) for row in tail]
    assert kinds(rows[shared:]) == kinds(base_rows[shared:])
    assert not list((tmp_path / "variant").glob(pretrain.STATE_FILE))
    lora = load_file(variant / "lora.safetensors")
    assert all(v.shape[0] == 4 for k, v in lora.items() if "lora_A" in k)
    a, b = load_file(base / "vision.safetensors"), load_file(variant / "vision.safetensors")
    towers = [k for k in a if k.startswith("model.vision_tower.")]
    assert towers and all(torch.equal(a[k], b[k]) for k in towers)
    with pytest.raises(FileExistsError, match="new --out"):
        branch(tmp_path / "base", tmp_path / "variant")


def test_place_targets_are_a_variant_of_stage_0():
    """--set pretrain_place=true adds the centre column/row loss and its held-out accuracy; off (the shipped
    recipe), stage 0 has neither."""
    from vasink.organism import pretrain, scenes

    batch = pretrain.targets(scenes.sample("train", 4, seed=0))
    for place in (False, True):
        model = pretrain.Pretrainer(pretrain.make_tower(build.VisionShape(width=32, layers=1, heads=2, mlp=64), 0),
                                    32, text_width=32, place=place)
        total, parts = model(batch)
        assert ("place" in parts) == place and total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-5)
        assert ("object_patch_place_acc" in model.evaluate(batch)) == place


def test_binding_labels_name_each_shapes_colour_and_place():
    """pretrain_bind's labels: the (shape, colour) pairs present, and for each shape present once its centre's
    column and row as thermometer codes (code k: cell >= k); a repeated shape's codes stay undefined (masked)."""
    from vasink.organism import pretrain, scenes

    obj = lambda shape, color, x, y: scenes.SceneObject(shape, color, (x, y, x + 12, y + 12))  # noqa: E731
    objects = [obj("circle", "red", 40, 2), obj("square", "blue", 4, 30), obj("ring", "red", 22, 6),
               obj("ring", "blue", 22, 40)]   # centres: circle (46, 8), square (10, 36), rings repeated
    pairs, places, mask = pretrain.binding_labels(scenes.Scene(None, objects))
    n, k = len(scenes.SHAPES), len(scenes.COLORS)
    at_pair = lambda s, c: scenes.SHAPES.index(s) * k + list(scenes.COLORS).index(c)  # noqa: E731
    assert {int(i) for i in pairs.nonzero()[0]} == {at_pair("circle", "red"), at_pair("square", "blue"),
                                                    at_pair("ring", "red"), at_pair("ring", "blue")}
    places, mask = places.reshape(2, n, 7), mask.reshape(2, n, 7)
    cells = {("circle", 0): 5, ("circle", 1): 1, ("square", 0): 1, ("square", 1): 4}  # (shape, axis): cell
    assert {(scenes.SHAPES[s], a) for a, s in zip(*mask.any(-1).nonzero())} == set(cells)
    for (shape, axis), cell in cells.items():
        assert places[axis, scenes.SHAPES.index(shape)].tolist() == [1.0] * cell + [0.0] * (7 - cell)
    # "is the square left of the circle": the square's column codes sum lower than the circle's
    assert places[0, scenes.SHAPES.index("square")].sum() < places[0, scenes.SHAPES.index("circle")].sum()


def test_binding_targets_are_a_variant_of_stage_0():
    """--set pretrain_bind=true adds the pair and place-code losses (the latter over defined codes only) and
    their held-out accuracies; off (the shipped recipe) stage 0 has neither and its heads start the same."""
    from vasink.organism import pretrain, scenes

    batch = pretrain.targets(scenes.sample("train", 8, seed=0))
    shape = build.VisionShape(width=32, layers=1, heads=2, mlp=64)
    models = {bind: pretrain.Pretrainer(pretrain.make_tower(shape, 0), 32, text_width=32, bind=bind)
              for bind in (False, True)}
    plain = models[False].state_dict()
    assert all(torch.equal(plain[k], v) for k, v in models[True].state_dict().items() if k in plain)
    for bind, model in models.items():
        total, parts = model(batch)
        assert ({"pairs", "places"} <= set(parts)) == bind
        assert total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-5)
        assert ({"pair_set_acc", "shape_cell_acc"} <= set(model.evaluate(batch))) == bind
    model = models[True]
    before = model(batch)[1]["places"].item()
    flipped = dict(batch, places=torch.where(batch["place_mask"].bool(), batch["places"],
                                             1 - batch["places"]))  # change only the undefined entries
    assert model(flipped)[1]["places"].item() == pytest.approx(before, rel=1e-6)
    assert 0 < batch["place_mask"].sum() < batch["place_mask"].numel()


def test_word_targets_measure_the_object_patches_distance_to_their_words(tokenizer, tiny_lm):
    from vasink.organism import scenes
    from vasink.organism.train import WordTargets

    lm, tok = tiny_lm()
    model = build.assemble(lm, build.make_processor(tok), _tiny().vision, seed=0)
    embed = model.get_input_embeddings().weight.detach()
    word = {w: embed[tokenizer(" " + w, add_special_tokens=False)["input_ids"][0]]
            for w in ("red", "circle", "left", "right", "top", "bottom")}
    labels = torch.zeros((1, 64, 3), dtype=torch.long)
    labels[..., 2] = -1
    labels[0, 5] = torch.tensor([1 + scenes.SHAPES.index("circle"), 1 + list(scenes.COLORS).index("red"), 2 * 8 + 7])
    tokens = torch.randn(1, 64, embed.shape[1]) * 100                    # background patches: anything
    words = WordTargets(model, build.make_processor(tok).tokenizer)
    tokens[0, 5] = word["red"] + word["circle"]
    assert words.loss(tokens, labels).item() == pytest.approx(0.0, abs=1e-6)
    tokens[0, 5] = 0.0                                                   # as far as a zero vector
    assert words.loss(tokens, labels).item() == pytest.approx(1.0, abs=1e-5)
    tokens[0, 5] = word["red"] + word["red"]                             # the wrong shape word: not near
    assert words.loss(tokens, labels).item() > 0.2
    # with places: the centre in column 7 (the rightmost) and row 2 of 0..7
    placed = WordTargets(model, build.make_processor(tok).tokenizer, places=True)
    tokens[0, 5] = word["red"] + word["circle"] + word["right"] + (5 / 7) * word["top"] + (2 / 7) * word["bottom"]
    assert placed.loss(tokens, labels).item() == pytest.approx(0.0, abs=1e-6)
    tokens[0, 5] = word["red"] + word["circle"] + word["left"] + (5 / 7) * word["top"] + (2 / 7) * word["bottom"]
    assert placed.loss(tokens, labels).item() > 0.05                     # left and right swapped: off


def test_word_targets_and_caption_context_train_the_projector_toward_the_words(tmp_path, tiny_lm, monkeypatch):
    """The variant runs through both stages; the word loss is logged and falls (the projector learns it); the
    caption is told in stage 2 only, and the batches carry patch labels for the word loss."""
    from vasink.organism import data

    asked = []
    real_batch = data.Encoder.batch

    def spy(self, rng, batch_scenes, **kwargs):
        asked.append((kwargs["context"], kwargs["patch_labels"]))
        return real_batch(self, rng, batch_scenes, **kwargs)
    monkeypatch.setattr(data.Encoder, "batch", spy)
    recipe = _tiny(projector_words=1.0, caption_context=0.5, word_places=True, projector_fit_steps=0, stage1_steps=12,
                   stage2_steps=2, lr=0.05, warmup=1)
    ckpt = train(tmp_path / "run", seed=0, recipe=recipe, log=lambda _: None, load_language_model=tiny_lm)
    assert asked == [(0.0, True)] * 12 + [(0.5, True)] * 2
    assert (ckpt / "lora.safetensors").exists()
    words = [json.loads(line)["words"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
             if '"words"' in line]
    assert len(words) == 2 and words[1] < 0.5 * words[0]  # steps 1 and 10


def test_the_projector_warm_start_fits_the_word_targets_before_stage_1(tmp_path, tiny_lm):
    recipe = _tiny(projector_words=1.0, projector_fit_steps=100, stage1_steps=1, stage2_steps=0, lr=0.01)
    train(tmp_path / "run", seed=0, recipe=recipe, log=lambda _: None, load_language_model=tiny_lm)
    fits = [r for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
            if r.get("stage") == "fit"]
    assert [r["step"] for r in fits] == [0, 50, 100]
    # a random one-layer tower sees little, so the fit only halves the fresh projector's error here
    assert fits[-1]["held_out_words"] < 0.5 * fits[0]["held_out_words"]


def test_a_resumed_run_refuses_another_seed_or_recipe_and_a_corrupt_state(tmp_path, tiny_lm, capsys):
    """A run continues what its state was trained with: another seed or recipe field is refused (it used to train
    on and relabel the checkpoint), the run's own seed is the default, fields of how it runs may change; at the
    end of stage 1 (a branch) the stage-2 fields may change and stage 1's may not; a truncated state is one clear
    error that leaves recipe.json as it was; --branch-from with --fresh is refused."""
    from vasink.cli import main
    from vasink.organism.train import branch

    base = tmp_path / "base"
    train(base, seed=1, recipe=_tiny(stage2_steps=1), log=lambda _: None, load_language_model=tiny_lm)
    labelled = (base / "checkpoint" / "organism.json").read_text()
    with pytest.raises(ValueError, match=r"trained with --seed 1; resume it with that seed"):
        train(base, seed=0, log=lambda _: None, load_language_model=tiny_lm)
    with pytest.raises(ValueError, match=r"another recipe \(stage2_lr 0.0002 -> 0.05\) \(only threads"):
        train(base, recipe=_tiny(stage2_steps=1, stage2_lr=0.05), log=lambda _: None, load_language_model=tiny_lm)
    train(base, recipe=_tiny(stage2_steps=1, save_every_s=5.0), log=lambda _: None, load_language_model=tiny_lm)
    assert json.loads((base / "checkpoint" / "organism.json").read_text())["seed"] == 1  # its own seed, kept
    assert (base / "checkpoint" / "organism.json").read_text().replace('"save_every_s": 5.0', '"save_every_s": 240.0') \
        == labelled

    branch(base, tmp_path / "variant", log=lambda _: None)
    with pytest.raises(ValueError, match=r"another recipe \(stage1_steps 2 -> 3\)"):
        train(tmp_path / "variant", recipe=_tiny(stage2_steps=1, stage1_steps=3), log=lambda _: None,
              load_language_model=tiny_lm)
    variant = train(tmp_path / "variant", recipe=_tiny(stage2_steps=2, lora_rank=4), log=lambda _: None,
                    load_language_model=tiny_lm)
    assert all(v.shape[0] == 4 for k, v in load_file(variant / "lora.safetensors").items() if "lora_A" in k)

    state = base / "state.safetensors"
    state.write_bytes(state.read_bytes()[:len(state.read_bytes()) // 2])
    recorded = (base / "recipe.json").read_text()
    with pytest.raises(ValueError, match=r"state.safetensors: not a readable training state .*--fresh"):
        train(base, log=lambda _: None, load_language_model=tiny_lm)
    assert (base / "recipe.json").read_text() == recorded
    assert main(["organism", "train", "--out", str(tmp_path / "x"), "--branch-from", str(base), "--fresh"]) == 2
    assert "--branch-from starts --out from another run's stage 1 and --fresh would delete it" in capsys.readouterr().err


def test_a_run_killed_between_saves_logs_each_step_once(tmp_path, tiny_lm):
    """A kill between two saves makes the run redo the steps since the last one: their first log rows go, so the
    log lists each step once, in the order of an uninterrupted run."""
    import shutil

    def steps(run):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return [(r.get("monitor", r).get("stage"), r.get("monitor", r).get("step"), "monitor" in r) for r in rows]

    straight = tmp_path / "straight"
    train(straight, recipe=_tiny(stage2_steps=2), log=lambda _: None, load_language_model=tiny_lm)
    killed = tmp_path / "killed"
    train(killed, recipe=_tiny(stage2_steps=2), log=lambda _: None, load_language_model=tiny_lm)
    shutil.copyfile(killed / "state_stage1.safetensors", killed / "state.safetensors")  # last save: end of stage 1
    (killed / "checkpoint").rename(tmp_path / "old-checkpoint")
    train(killed, log=lambda _: None, load_language_model=tiny_lm)
    assert steps(killed) == steps(straight)
    assert any(stage == 2 for stage, _, _ in steps(killed))  # the redone steps are stage 2's


def test_dropping_the_rows_after_a_saved_step_keeps_other_stages_rows(tmp_path):
    from vasink.organism.state_file import drop_rows_after

    rows = [{"stage": 0, "step": 10}, {"stage": 0, "step": 20}, {"stage": 0, "step": 30}, {"stage": "fit", "step": 50},
            {"monitor": {"stage": 1, "step": 0}}, {"step": 10, "loss": 1.0}]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": 0, "st')  # a killed write's tail
    drop_rows_after(log, 20, stages=(0,))  # stage 0 resumed at its step 20
    assert [json.loads(line) for line in log.read_text().splitlines()] == rows[:2] + rows[3:]
    drop_rows_after(log, 5, stages=(1, 2, None))  # stages 1-2 resumed at step 5
    assert [json.loads(line) for line in log.read_text().splitlines()] == rows[:2] + rows[3:5]
