"""The training recipe runs, checkpoints, resumes and is reproducible from the seed (tiny shapes, few steps)."""

import json

import numpy as np
import torch

from vasink import organism
from vasink.organism import build, data, scenes
from vasink.organism.train import Recipe, train


def _tiny(**overrides) -> Recipe:
    shape = build.Shape(text_width=32, text_layers=2, text_heads=2, text_mlp=64, vision_width=16,
                        vision_layers=1, vision_heads=2, vision_mlp=32)
    fields = dict(shape=shape, text_steps=2, image_steps=2, batch_size=2, warmup=1, monitor_every=4,
                  image_freeze_llm_steps=1)
    fields.update(overrides)
    return Recipe(**fields)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_train_writes_a_loadable_checkpoint_and_is_reproducible(tmp_path):
    logs = []
    ckpt_a = train(tmp_path / "a", seed=1, recipe=_tiny(), log=logs.append)
    ckpt_b = train(tmp_path / "b", seed=1, recipe=_tiny(), log=lambda _: None)
    model, processor = organism.load(ckpt_a)
    assert model.config.text_config.hidden_size == 32
    wa, wb = _weights(ckpt_a), _weights(ckpt_b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    records = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    monitor = [r["monitor"] for r in records if "monitor" in r][-1]
    assert len(monitor["layers"]) == 2 and "bos_phi" in monitor["layers"][0]
    assert (tmp_path / "a" / "state_text_stage.pt").exists()


def test_resume_continues_where_it_stopped(tmp_path):
    train(tmp_path / "run", seed=0, recipe=_tiny(image_steps=0), log=lambda _: None)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["step"] == 2
    messages = []
    train(tmp_path / "run", seed=0, recipe=_tiny(image_steps=1), log=messages.append)
    assert any("resumed at step 2" in m for m in messages)
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=False)["step"] == 3


def test_answer_only_labels_keep_just_the_answers():
    encoder = data.Encoder()
    vocab = build.vocabulary()
    batch_scenes = scenes.sample("train", 3, seed=0)
    batch = encoder.batch(np.random.default_rng(0), batch_scenes, image=True, max_turns=3, answers_only=True)
    for row in range(3):
        kept = [vocab[t] for t, label in zip(batch["input_ids"][row].tolist(), batch["labels"][row].tolist())
                if label != data.IGNORE]
        assert kept and kept[-1] == build.EOS
        assert build.IMAGE not in kept and build.USER not in kept and build.ASSISTANT not in kept
    full = encoder.batch(np.random.default_rng(0), batch_scenes, image=True, max_turns=3)
    assert (full["labels"] != data.IGNORE).sum() > (batch["labels"] != data.IGNORE).sum()
    assert (full["labels"][full["input_ids"] == encoder.image] == data.IGNORE).all()
