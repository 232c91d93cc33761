"""The shipped organism checkpoint: loads offline, answers, and still shows the numbers of docs/organism.md."""

import json
import math

import pytest
import torch

from vasink import organism
from vasink.organism import measure, scenes

CKPT = organism.CHECKPOINT_DIR
pytestmark = pytest.mark.skipif(not (CKPT / "model.safetensors").exists(),
                                reason=f"no organism checkpoint shipped yet at {CKPT}")
# The numbers docs/organism.md reports, written by the same measurement (measure.phenomenon) on the
# test split; the regression test recomputes a smaller sample and compares within tolerances.
REFERENCE = CKPT / "measured.json"


@pytest.fixture(scope="module")
def loaded():
    return organism.load()


def test_checkpoint_is_small_and_loads_offline(loaded, monkeypatch):
    size = sum(f.stat().st_size for f in CKPT.rglob("*") if f.is_file())
    assert size <= 20 * 2**20
    model, processor = loaded
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.text_config.model_type == "llama"
    assert model.config.vision_config.model_type == "clip_vision_model"
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_index


def test_generates_a_known_word(loaded):
    model, processor = loaded
    scene = scenes.sample("test", 1, seed=0)[0]
    reply = measure.answer(model, processor, [scene.image], ["is there a circle in the image ?"],
                           max_new_tokens=3)[0]
    assert reply in {"yes", "no"}


def test_sink_facts_are_consistent(loaded):
    model, _ = loaded
    facts = organism.sink_facts()
    width = model.config.text_config.hidden_size
    assert facts["sink_dims"] and all(0 <= d < width for d in facts["sink_dims"])
    assert 3.0 < facts["tau"] < math.sqrt(width)  # above the random-max level, below the ceiling of phi
    assert isinstance(facts["emerged"], bool)


def test_phenomenon_matches_the_documented_numbers(loaded):
    model, processor = loaded
    facts = organism.sink_facts()
    reference = json.loads(REFERENCE.read_text())
    ref = reference["phenomenon"]
    got = measure.phenomenon(model, processor, n_scenes=ref["n_scenes"], tau=ref["tau"],
                             sink_dims=ref["sink_dims"])
    assert len(got["layers"]) == len(ref["layers"])
    for entry, expected in zip(got["layers"], ref["layers"]):
        for key in ("bos_phi", "text_phi_median", "visual_sink_fraction", "images_with_visual_sink",
                    "attention_to_bos"):
            assert entry[key] == pytest.approx(expected[key], rel=1e-3, abs=1e-3), (entry["layer"], key)
    searched = [e for e in got["layers"] if e["layer"] >= measure.FIRST_SEARCHED_LAYER]
    if facts["emerged"]:
        assert all(e["bos_phi_min"] > facts["tau"] for e in searched)
        assert all(e["text_phi_median"] < facts["tau"] / 3 for e in searched)
    else:  # the documented outcome: no massive activation on BOS, no visual sink token
        assert all(e["bos_phi"] < facts["tau"] for e in searched)
        assert all(e["visual_sink_fraction"] == 0 for e in searched)


def test_sink_dims_are_rediscovered_as_documented(loaded):
    model, processor = loaded
    reference = json.loads(REFERENCE.read_text())
    discovered, evidence = measure.discover_dims(model, processor, n_scenes=16)
    assert discovered == reference["own_find_dims"]["dims"]
    top = evidence.min(0).argsort()[::-1][:4].tolist()
    assert top == reference["own_find_dims"]["bos_top_dims"]
