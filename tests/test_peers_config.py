"""PAIConfig / VAFConfig / VCDConfig: validation errors, scaled default layers, arms by name, and switching
between VAR and its peers on one model (the model exactly as loaded after each)."""

import pytest
import torch
from conftest import SINK_DIMS, batch_inputs, prompt_ids, tiny_llava

import vasink
from vasink.peers import method_config, official_decoding, scaled_layers


@pytest.mark.parametrize("config, message", [
    (lambda: vasink.PAIConfig(alpha=-0.1), r"PAIConfig.alpha=-0.1 is out of range; valid range is \[0.0, inf\]"),
    (lambda: vasink.PAIConfig(gamma=0.5), r"PAIConfig.gamma=0.5 is out of range; valid range is \[1.0, inf\]"),
    (lambda: vasink.PAIConfig(cutoff=0.0), r"PAIConfig.cutoff=0.0 is out of range; valid range is \(0.0, 1.0\]"),
    (lambda: vasink.PAIConfig(alpha="big"), r"PAIConfig.alpha must be a number, got 'big'"),
    (lambda: vasink.VAFConfig(layers=()), r"VAFConfig.layers=\(\): need None or a non-empty list"),
    (lambda: vasink.VAFConfig(layers=(1, -2)), r"VAFConfig.layers=\(1, -2\): need None or a non-empty list"),
    (lambda: vasink.VAFConfig(layers=3), r"VAFConfig.layers=3: need None or a list of 0-based layer indices"),
    (lambda: vasink.VAFConfig(image_scale=float("nan")), r"VAFConfig.image_scale must be a number"),
    (lambda: vasink.VCDConfig(beta=1.5), r"VCDConfig.beta=1.5 is out of range; valid range is \(0.0, 1.0\]"),
    (lambda: vasink.VCDConfig(noise_step=1000), r"VCDConfig.noise_step=1000 is out of range; valid: an int in"),
    (lambda: vasink.VCDConfig(seed=1.5), r"VCDConfig.seed=1.5: need None or an int"),
])
def test_config_errors_name_the_field_and_the_valid_range(config, message):
    with pytest.raises(ValueError, match=message):
        config()


def test_defaults_are_the_official_values():
    assert vasink.PAIConfig() == vasink.PAIConfig(alpha=0.2, gamma=1.1, layers=None, cutoff=0.1)
    assert vasink.VAFConfig() == vasink.VAFConfig(image_scale=1.15, system_scale=0.95, layers=None)
    assert vasink.VCDConfig() == vasink.VCDConfig(alpha=1.0, beta=0.1, noise_step=500, seed=None)


@pytest.mark.parametrize("depth, pai, vaf", [
    (32, range(2, 32), range(9, 15)),  # LLaVA-1.5-7B: the official layers
    (40, range(3, 40), range(11, 19)),  # LLaVA-1.5-13B
    (28, range(2, 28), range(8, 13)),  # Qwen2-VL-7B
    (5, range(0, 5), range(1, 2)),  # the tiny test models
    (1, range(0, 1), range(0, 1)),
])
def test_default_layers_scale_the_official_range_to_the_depth(depth, pai, vaf):
    assert vasink.PAIConfig().modified_layers(depth) == tuple(pai) == scaled_layers((2, 32), depth)
    assert vasink.VAFConfig().modified_layers(depth) == tuple(vaf)
    assert vasink.VCDConfig().modified_layers(depth) == ()  # no attention change
    assert vasink.VAFConfig(layers=(4, 2, 4)).modified_layers(depth + 5) == (2, 4)


def test_method_config_and_official_decoding_by_name():
    assert method_config("base") is None
    assert method_config("var", p=0.5) == vasink.VARConfig(p=0.5)
    assert method_config("pai", gamma=2.0) == vasink.PAIConfig(gamma=2.0)
    assert method_config("vaf") == vasink.VAFConfig()
    assert method_config("vcd", seed=55, beta=0.2) == vasink.VCDConfig(seed=55, beta=0.2)
    with pytest.raises(ValueError, match="unknown method 'pia' \\(did you mean 'pai'\\?\\)"):
        method_config("pia")
    with pytest.raises(ValueError, match="method 'base' takes no parameters"):
        method_config("base", alpha=1)
    assert official_decoding("vcd") == {"do_sample": True, "num_beams": 1, "temperature": 1.0, "top_p": 1.0,
                                        "top_k": 0}
    assert official_decoding("pai")["do_sample"] is False


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_switching_between_var_and_peers_restores_the_model_exactly():
    model = tiny_llava()
    inputs = batch_inputs([prompt_ids(), prompt_ids(prefix=(1, 5, 6, 4))])
    stock = logits(model, inputs)
    var_config = vasink.VARConfig(tau=1.0, sink_dims=SINK_DIMS)
    with vasink.var(model, var_config):
        with_var = logits(model, inputs)
        with vasink.var(model, vasink.PAIConfig(alpha=1.0)) as handle:
            assert type(handle).__name__ == "PeerHandle" and model._vasink_handle is handle
            assert model.config.text_config._attn_implementation == "vasink-peers"
            with_pai = logits(model, inputs)
            with vasink.var(model, vasink.VCDConfig(seed=0)):
                assert model.input_modalities == ("text",)  # VCD gets the pixels at the prefill
                assert model.config.text_config._attn_implementation == "sdpa"  # VCD leaves attention alone
        assert "input_modalities" not in model.__dict__
        torch.testing.assert_close(logits(model, inputs), with_var, rtol=0, atol=0)  # VAR is back
    assert not torch.allclose(with_pai, stock)
    assert model.config.text_config._attn_implementation == "sdpa" and not hasattr(model, "_vasink_handle")
    assert torch.equal(logits(model, inputs), stock)
    handle = vasink.enable(model, vasink.VAFConfig())
    vasink.disable(model)
    assert not handle.active and torch.equal(logits(model, inputs), stock)


def test_a_config_that_cannot_run_leaves_the_model_as_it_was():
    model = tiny_llava(num_layers=5)
    inputs = batch_inputs([prompt_ids()])
    stock = logits(model, inputs)
    handle = vasink.enable(model, vasink.VAFConfig(layers=(1,)))
    with pytest.raises(ValueError, match=r"PAIConfig.layers \[7\] out of range: the model has 5 decoder layers"):
        vasink.enable(model, vasink.PAIConfig(layers=(1, 7)))
    assert handle.active and model._vasink_handle is handle
    with pytest.raises(ValueError, match="intervention is VAR's analysis rule"):
        vasink.enable(model, vasink.PAIConfig(), intervention=lambda *a: a[0])
    vasink.disable(model)
    assert torch.equal(logits(model, inputs), stock)
    flash = tiny_llava()
    flash.config.text_config._attn_implementation = "flash_attention_2"  # as loaded with it (no kernel needed)
    with pytest.raises(ValueError, match="PAI runs on models loaded with attn_implementation in"):
        vasink.enable(flash, vasink.PAIConfig())
    assert not hasattr(flash, "_vasink_handle")
