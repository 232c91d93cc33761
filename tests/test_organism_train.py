"""The training recipe runs, checkpoints as safetensors, resumes, and exports what the package ships
(a tiny random Llama with SmolLM2's tokenizer stands in for SmolLM2, so the test takes seconds)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vasink import organism
from vasink.organism import build, language_model
from vasink.organism.train import Recipe, export, train


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
    fields = dict(vision=build.VisionShape(width=16, layers=1, heads=2, mlp=32), stage1_steps=2, stage2_steps=2,
                  batch_size=2, max_turns=2, warmup=1, monitor_every=2, lora_rank=2, sink_dim=3, threads=1,
                  bf16_autocast=False)
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
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    lora = load_file(ckpt_a / "lora.safetensors")
    assert lora and all("language_model" in k and "lora_" in k for k in lora)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # stage 2 trained the adapter
    vision = load_file(ckpt_a / "vision.safetensors")
    assert vision and all(k.startswith(("model.vision_tower.", "model.multi_modal_projector.")) for k in vision)
    assert (tmp_path / "a" / "state_stage1.safetensors").exists()
    records = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    monitors = [r["monitor"] for r in records if "monitor" in r]
    assert [m["step"] for m in monitors] == [2, 4] and len(monitors[0]["layers"]) == 2


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


def test_export_of_a_stopped_run(tmp_path, tiny_lm):
    run = tmp_path / "run"
    train(run, seed=0, recipe=_tiny(stage1_steps=50), minutes=0.0, log=lambda _: None, load_language_model=tiny_lm)
    out = export(run, tmp_path / "export", log=lambda _: None, load_language_model=tiny_lm)
    assert (out / "vision.safetensors").exists() and not (out / "lora.safetensors").exists()
    assert json.loads((out / "organism.json").read_text())["lora"] is None
