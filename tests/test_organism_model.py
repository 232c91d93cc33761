"""The shipped organism checkpoint: loads offline, answers, and still shows the numbers of docs/organism.md."""

import json
import math
from pathlib import Path

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
    assert 0 < facts["tau"] < math.sqrt(width)


def test_phenomenon_matches_the_documented_numbers(loaded):
    model, processor = loaded
    facts = organism.sink_facts()
    reference = json.loads(REFERENCE.read_text())
    got = measure.phenomenon(model, processor, n_scenes=32, tau=facts["tau"], sink_dims=facts["sink_dims"])
    ref_layers = {e["layer"]: e for e in reference["layers"]}
    for entry in got["layers"]:
        ref = ref_layers[entry["layer"]]
        assert entry["bos_phi"] == pytest.approx(ref["bos_phi"], rel=0.1, abs=0.3)
        assert entry["text_phi_median"] == pytest.approx(ref["text_phi_median"], rel=0.15, abs=0.2)
        assert entry["visual_sink_fraction"] == pytest.approx(ref["visual_sink_fraction"], abs=0.05)
        assert entry["attention_to_bos"] == pytest.approx(ref["attention_to_bos"], abs=0.05)
    # the sink dims are rediscovered from BOS alone
    discovered = measure.phenomenon(model, processor, n_scenes=8)["sink_dims"]
    assert set(facts["sink_dims"]) & set(discovered)
