"""VAR on tiny random LLaVA models: bit-identity when off, fast = reference, planted sinks, generate."""

import pytest
import torch
from conftest import (BOS, IMAGE_TOKEN, SINK_DIMS, SinkPlanter, batch_inputs, num_patches, prompt_ids, tiny_llava,
                      tiny_processor)
from test_redistribute import loop_oracle
from torch import nn

import vasink
from vasink import VARConfig

CONFIG = VARConfig(tau=4.0, rho=0.5, p=0.6, min_visual_attention=0.2, sink_dims=SINK_DIMS)


def logits(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs).logits



def test_enable_then_disable_is_bit_identical(planted):
    inputs = batch_inputs([prompt_ids()])
    before = logits(planted, inputs)
    handle = vasink.enable(planted, CONFIG)
    with_var = logits(planted, inputs)
    handle.disable()
    after = logits(planted, inputs)
    assert not torch.allclose(with_var, before), "VAR must change this model's output"
    assert torch.equal(after, before)
    assert planted.config.text_config._attn_implementation == "sdpa"
    assert not any(hasattr(layer.self_attn, "_vasink_state") for layer in planted.model.language_model.layers)


def test_var_without_sinks_is_bit_identical(planted):
    inputs = batch_inputs([prompt_ids()])
    before = logits(planted, inputs)
    with vasink.var(planted, CONFIG.replace(tau=7.9)):  # above every planted phi (max sqrt(64) = 8)
        assert torch.equal(logits(planted, inputs), before)


def test_detect_sinks_finds_exactly_the_planted_tokens(planted):
    inputs = batch_inputs([prompt_ids(), prompt_ids(prefix=(BOS, 5, 6, 4))])
    report = vasink.detect_sinks(planted, inputs, CONFIG)
    planter_mask = SinkPlanter(tiny_llava(), patches=(2, 9)).planted_mask(inputs["input_ids"])
    for layer in range(2, 5):
        assert torch.equal(report[layer].sink_mask, planter_mask), layer
        for row in range(2):
            visual = report[layer].visual_sink_positions(row)
            assert [int(inputs["input_ids"][row, j]) for j in visual] == [IMAGE_TOKEN, IMAGE_TOKEN]
            text = report[layer].text_sink_positions(row)
            assert len(text) == 1 and inputs["input_ids"][row, text[0]] == BOS
    assert report.visual_sink_fraction(2) == pytest.approx(2 / num_patches())
    assert not report[0].sink_mask.any() and not report[1].sink_mask.any()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fast_equals_reference(attn):
    model = tiny_llava(attn_implementation=attn)
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids(), prompt_ids(images=2, suffix=(7, 8))])
    base = logits(model, inputs)
    with vasink.var(model, CONFIG):
        fast = logits(model, inputs)
    with vasink.var(model, CONFIG.replace(implementation="reference")):
        reference = logits(model, inputs)
    planter.remove()
    real = inputs["attention_mask"].bool()  # padded positions' outputs are never used
    assert (fast - base)[real].abs().max() > 1e-3
    torch.testing.assert_close(fast[real], reference[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compat", ["paper", "released-code"])
def test_reference_attentions_equal_oracle_on_stock_weights(compat):
    """Layer 2 is the first modified layer: its input is the stock one, so VAR's change can be recomputed."""
    model = tiny_llava(attn_implementation="eager")
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids(), prompt_ids(prefix=(BOS, 5, 6))])
    config = CONFIG.replace(compat=compat, rho=0.5 if compat == "paper" else 0.5, implementation="reference")
    with torch.no_grad():
        stock = model(**inputs, output_attentions=True)
        report = vasink.detect_sinks(model, inputs, config)
        with vasink.var(model, config):
            modified = model(**inputs, output_attentions=True)
    planter.remove()
    ids = inputs["input_ids"]
    visual = (ids == IMAGE_TOKEN)
    queries = (visual.long().cumsum(-1) > 0) & ~visual & inputs["attention_mask"].bool()
    want = loop_oracle(stock.attentions[2], visual, report[2].sink_mask, queries,
                       config.rho, config.p, config.min_visual_attention, compat)
    got = modified.attentions[2]
    assert not torch.allclose(got, stock.attentions[2])
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(modified.attentions[1], stock.attentions[1], rtol=0, atol=0)


def test_last_layer_modified_only_in_released_code_mode(planted):
    inputs = batch_inputs([prompt_ids()])
    base = logits(planted, inputs)
    last_only = CONFIG.replace(layers=(4,))
    with vasink.var(planted, last_only):
        assert torch.equal(logits(planted, inputs), base)
    with vasink.var(planted, last_only.replace(compat="released-code", rho=0.5, p=0.4)):
        assert not torch.allclose(logits(planted, inputs), base)


def test_no_image_prompt_is_a_no_op(planted):
    inputs = batch_inputs([[BOS, 5, 6, 7, 8]])
    base = logits(planted, inputs)
    with vasink.var(planted, CONFIG):
        assert torch.equal(logits(planted, inputs), base)


def test_one_image_token():
    model = tiny_llava(image_size=7)  # one patch: the image is a single visual token
    planter = SinkPlanter(model, patches=())
    inputs = batch_inputs([prompt_ids(image_size=7)], image_size=7)
    with vasink.var(model, CONFIG):
        fast = logits(model, inputs)
    with vasink.var(model, CONFIG.replace(implementation="reference")):
        reference = logits(model, inputs)
    planter.remove()
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_all_visual_tokens_sinks_no_nan():
    model = tiny_llava()
    planter = SinkPlanter(model, patches=tuple(range(num_patches())))
    inputs = batch_inputs([prompt_ids()])
    base = logits(model, inputs)
    for implementation in ("fast", "reference"):
        with vasink.var(model, CONFIG.replace(implementation=implementation)):
            out = logits(model, inputs)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-5)  # no non-sink visual mass: nothing moves
    planter.remove()


def generate(model, inputs, use_cache=True, new=6):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=new, do_sample=False, use_cache=use_cache)


@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_generate_cached_equals_uncached(planted, implementation):
    inputs = batch_inputs([prompt_ids()])
    with vasink.var(planted, CONFIG.replace(implementation=implementation)):
        cached = generate(planted, inputs)
        uncached = generate(planted, inputs, use_cache=False)
    assert torch.equal(cached, uncached)


def test_generate_fast_equals_reference_and_differs_from_stock(planted):
    inputs = batch_inputs([prompt_ids(), prompt_ids(prefix=(BOS, 5, 6))])
    stock = generate(planted, inputs, new=8)
    with vasink.var(planted, CONFIG):
        fast = generate(planted, inputs, new=8)
    with vasink.var(planted, CONFIG.replace(implementation="reference")):
        reference = generate(planted, inputs, new=8)
    assert torch.equal(fast, reference)
    assert not torch.equal(fast, stock)


def test_padded_batch_equals_each_prompt_alone(planted):
    prompts = [prompt_ids(), prompt_ids(prefix=(BOS, 5, 6, 4, 3), suffix=(7, 8)), prompt_ids(images=2)]
    batch = batch_inputs(prompts)
    with vasink.var(planted, CONFIG):
        together = generate(planted, batch)
        new_together = together[:, batch["input_ids"].shape[1]:]
        image = 0
        for row, ids in enumerate(prompts):
            n_images = ids.count(IMAGE_TOKEN) // num_patches()
            alone_inputs = batch_inputs([ids])
            alone_inputs["pixel_values"] = batch["pixel_values"][image:image + n_images]
            image += n_images
            alone = generate(planted, alone_inputs)
            assert torch.equal(alone[0, len(ids):], new_together[row]), row


def test_enable_twice_replaces_config_and_context_restores(planted):
    inputs = batch_inputs([prompt_ids()])
    base = logits(planted, inputs)
    first = vasink.enable(planted, CONFIG.replace(p=0.2))
    second = vasink.enable(planted, CONFIG.replace(p=0.9))
    assert first is second and second.config.p == 0.9
    with vasink.var(planted, CONFIG.replace(p=0.9)):
        strong = logits(planted, inputs)
    assert torch.equal(logits(planted, inputs), strong)  # still on, p=0.9, after the with block
    vasink.disable(planted)
    assert torch.equal(logits(planted, inputs), base)


def test_disable_inside_a_var_block_stays_off_and_bad_config_changes_nothing(planted):
    inputs = batch_inputs([prompt_ids()])
    base = logits(planted, inputs)
    handle = vasink.enable(planted, CONFIG)
    with_var = logits(planted, inputs)
    with pytest.raises(ValueError, match="out of range"):
        vasink.enable(planted, CONFIG.replace(sink_dims=(64,)))
    assert handle.active and torch.equal(logits(planted, inputs), with_var)  # still on, as configured
    with vasink.var(planted, CONFIG.replace(p=0.9)):
        vasink.disable(planted)
    assert not handle.active and torch.equal(logits(planted, inputs), base)
    again = vasink.enable(planted, CONFIG)  # enable works again, and disable reaches the new handle
    vasink.disable(planted)
    assert not again.active and torch.equal(logits(planted, inputs), base)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_fast_path_makes_the_reference_paths_change(dtype):
    """VAR's change of the logits (not the logits: the rounding of a half-precision model is as large as VAR's
    effect on this tiny model) is the reference path's change, so a fast path that returned the stock attention
    in half precision fails."""
    model = tiny_llava().to(dtype)
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids(), prompt_ids(images=2, suffix=(7, 8))])
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    config = CONFIG.replace(p=0.9, rho=0.0, min_visual_attention=0.0)  # every eligible row: a large change
    base = logits(model, inputs).float()
    with vasink.var(model, config):
        fast = logits(model, inputs).float()
    with vasink.var(model, config.replace(implementation="reference")):
        reference = logits(model, inputs).float()
    planter.remove()
    real = inputs["attention_mask"].bool()
    fast_change, reference_change = (fast - base)[real], (reference - base)[real]
    assert torch.isfinite(fast).all()
    assert reference_change.norm() > 0.5, "the sinks must matter in this test"
    assert (fast_change - reference_change).norm() < 0.25 * reference_change.norm()


def test_mixed_batch_on_the_cpu_fast_path_leaves_the_row_without_visual_sinks_alone():
    """Row 0 has visual sinks, row 1 only its BOS sink: the layers' VAR skips row 1 (no visual sink) and
    changes row 0, on the CPU fast path (prefill rows and decode rows) as on the reference path."""
    model = tiny_llava()
    planter = SinkPlanter(model)
    planted_mask = planter.planted_mask
    first_row = torch.arange(2)[:, None] == 0
    planter.planted_mask = lambda ids: planted_mask(ids) & ((ids != IMAGE_TOKEN) | first_row)  # visual: row 0 only
    inputs = batch_inputs([prompt_ids(), prompt_ids(prefix=(BOS, 5, 6))])
    config = CONFIG.replace(rho=0.0, min_visual_attention=0.0)  # the head test would select row 1's rows too
    report = vasink.detect_sinks(model, inputs, config)
    assert report[2].visual_sink_positions(0) and not report[2].visual_sink_positions(1)
    assert report[2].text_sink_positions(1), "row 1 has a text sink: VAR would move its attention if it ran"
    base, base_tokens = logits(model, inputs), generate(model, inputs, new=4)
    for implementation in ("fast", "reference"):
        with vasink.var(model, config.replace(implementation=implementation)):
            out, tokens = logits(model, inputs), generate(model, inputs, new=4)
        assert (out[0] - base[0]).abs().max() > 1e-3, implementation
        torch.testing.assert_close(out[1], base[1], rtol=1e-5, atol=1e-5)
        assert torch.equal(tokens[1], base_tokens[1])
    with vasink.var(model, config.replace(skip_layers_without_visual_sink=False)):
        assert (logits(model, inputs)[1] - base[1]).abs().max() > 1e-3, "the flag is what leaves row 1 alone"
    planter.remove()


def test_phi_equal_to_tau_is_not_a_sink(planted):
    """Sinks are phi > tau, strictly."""
    inputs = batch_inputs([prompt_ids()])
    phi = vasink.detect_sinks(planted, inputs, CONFIG).layers[2].phi[0, 0]  # the planted BOS
    assert phi > CONFIG.tau
    at_phi = vasink.detect_sinks(planted, inputs, CONFIG.replace(tau=float(phi)))
    assert not at_phi[2].sink_mask[0, 0]
    below = float(torch.nextafter(phi, phi.new_tensor(0.0)))  # the next float32 down
    assert vasink.detect_sinks(planted, inputs, CONFIG.replace(tau=below))[2].sink_mask[0, 0]


def test_unreachable_tau_is_a_clear_error(planted):
    """phi <= sqrt(hidden_size) = 8 here: tau >= 8 would make VAR a silent no-op."""
    inputs = batch_inputs([prompt_ids()])
    base = logits(planted, inputs)
    with pytest.raises(ValueError, match=r"tau=8 can never be reached.*sqrt\(64\) = 8\.00.*find_sink_dims"):
        vasink.enable(planted, CONFIG.replace(tau=8.0))
    assert torch.equal(logits(planted, inputs), base)
    handle = vasink.enable(planted, CONFIG)
    with pytest.raises(ValueError, match="tau=20 can never be reached"):
        vasink.enable(planted, CONFIG.replace(tau=20.0))
    assert handle.active and handle.config == CONFIG  # VAR as it was
    handle.disable()
    with pytest.warns(UserWarning, match="find_sink_dims"):  # detect_sinks still reports phi
        vasink.detect_sinks(planted, inputs, CONFIG.replace(tau=8.0))


def test_unsupported_model_lists_supported():
    class TinyThing(nn.Module):
        pass

    with pytest.raises(vasink.UnsupportedModelError, match="LlavaForConditionalGeneration.*register_adapter"):
        vasink.enable(TinyThing(), CONFIG)


def test_a_subclass_of_a_supported_model_uses_its_adapter(planted):
    from transformers import LlavaForConditionalGeneration

    class MyLlava(LlavaForConditionalGeneration):
        pass

    planted.__class__ = MyLlava  # the same weights and config under a user's subclass
    inputs = batch_inputs([prompt_ids()])
    base = logits(planted, inputs)
    with vasink.var(planted, CONFIG):
        assert not torch.allclose(logits(planted, inputs), base)


def test_sink_dims_out_of_range_for_model(planted):
    with pytest.raises(ValueError, match="out of range for hidden size 64"):
        vasink.enable(planted, CONFIG.replace(sink_dims=(64,)))
    with pytest.raises(ValueError, match="find_sink_dims"):
        vasink.enable(planted, VARConfig())  # "auto" on a model not in the known table


def test_inputs_embeds_is_a_clear_error():
    planted = tiny_llava()
    inputs = batch_inputs([[BOS, 5, 6]])
    embeds = planted.get_input_embeddings()(inputs["input_ids"])
    with vasink.var(planted, CONFIG):
        with pytest.raises(ValueError, match="input_ids"):
            planted(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])


@pytest.mark.parametrize("kernel_devices, small_rows", [((), 4), (("cpu",), 0), ((), 0)])
def test_fast_path_variants_equal_reference(monkeypatch, kernel_devices, small_rows):
    """The portable path (stock SDPA + log-sum-exp from a bounded math pass) and the prefill path for decode rows."""
    import vasink.attention as attention

    monkeypatch.setattr(attention, "KERNEL_LSE_DEVICES", kernel_devices)
    monkeypatch.setattr(attention, "SMALL_ROWS", small_rows)
    monkeypatch.setattr(attention, "ROW_CHUNK", 3)  # several row chunks per call
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids(), prompt_ids(images=2, suffix=(7, 8))])
    with vasink.var(model, CONFIG):
        fast = logits(model, inputs)
        fast_tokens = generate(model, inputs)
    with vasink.var(model, CONFIG.replace(implementation="reference")):
        reference = logits(model, inputs)
        reference_tokens = generate(model, inputs)
    planter.remove()
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(fast[real], reference[real], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast_tokens, reference_tokens)


def test_intervention_rule_replaces_var_on_the_reference_path(planted):
    """An analysis rule sees the plan VAR would use and its weights are what the model returns."""
    seen = []

    def mask_visual_sinks(weights, plan, config, layer):
        seen.append(layer)
        visual_sinks = (plan.visual_keys & plan.sink_keys)[:, None, None, :]
        rows = plan.eligible_queries[:, None, :, None]
        masked = torch.where(visual_sinks & rows, 0.0, weights)
        return masked / masked.sum(-1, keepdim=True)

    inputs = batch_inputs([prompt_ids()])
    with vasink.var(planted, CONFIG, intervention=mask_visual_sinks):  # fast config: the rule forces reference
        out = planted(**inputs, output_attentions=True)
    assert sorted(set(seen)) == [2, 3]
    report = vasink.detect_sinks(planted, inputs, CONFIG)
    sinks = report[2].visual_sink_positions()
    eligible = [i for i in range(inputs["input_ids"].shape[1]) if i > sinks[-1] and inputs["input_ids"][0, i] != IMAGE_TOKEN]
    attn = out.attentions[2][0]  # (H, Q, K)
    assert attn[:, eligible][:, :, sinks].abs().max() == 0
    torch.testing.assert_close(attn[:, eligible].sum(-1), torch.ones(attn.shape[0], len(eligible), device=attn.device))
    assert attn[:, :eligible[0]][:, :, sinks].sum() > 0  # image rows untouched


def test_decode_masks_are_views_of_one_growing_buffer(planted):
    """Decode steps see the prefill's sink and visual masks padded with False, without a new tensor per step."""
    from vasink.state import PrefillMask

    inputs = batch_inputs([prompt_ids()])
    handle = vasink.enable(planted, CONFIG)
    with torch.no_grad():
        planted.generate(**inputs, max_new_tokens=3, do_sample=False)
    state, length = handle.state, inputs["input_ids"].shape[1]
    assert state.num_keys == length + 2  # the last generated token is never fed back
    assert torch.equal(state.visual_keys[:, :length], (inputs["input_ids"] == IMAGE_TOKEN))
    assert not state.visual_keys[:, length:].any()
    handle.disable()

    mask = PrefillMask(torch.tensor([[True, False, True]]))
    step1, step2 = mask.over(4), mask.over(5)
    assert step1.data_ptr() == step2.data_ptr()  # same buffer, no copy
    far = mask.over(9)  # beyond the buffer: it grows, contents kept
    for padded in (step2, far):
        assert torch.equal(padded[:, :3], mask.prefill) and not padded[:, 3:].any()


def test_handles_stay_the_users_through_nested_blocks_bad_layers_and_stale_reconfigures(planted):
    """The handle a user holds keeps working: after a nested peer block it is the model's handle again (its
    disable() switches VAR off); a config with layers out of range leaves VAR on as it was, in a block or not; a
    stale handle reconfigured while a peer is on replaces the peer (nothing of it stays installed); a peer's
    handle is the same after a VAR block."""
    from vasink.api import HANDLE_ATTR

    inputs = batch_inputs([prompt_ids()])
    base = logits(planted, inputs)
    hooks = (len(planted._forward_hooks), len(planted._forward_pre_hooks))  # the planter's
    handle = vasink.enable(planted, CONFIG)
    with_var = logits(planted, inputs)
    with vasink.var(planted, vasink.VAFConfig()):
        pass
    assert handle.active and getattr(planted, HANDLE_ATTR) is handle and torch.equal(logits(planted, inputs), with_var)
    with pytest.raises(ValueError, match=r"layers \[7\] out of range"):
        vasink.enable(planted, CONFIG.replace(layers=(7,)))
    with vasink.var(planted, CONFIG.replace(p=0.9)), pytest.raises(ValueError, match=r"layers \[5\] out of range"):
        vasink.enable(planted, CONFIG.replace(layers=(5,)))
    assert handle.active and handle.config == CONFIG and torch.equal(logits(planted, inputs), with_var)
    handle.disable()
    assert torch.equal(logits(planted, inputs), base)

    stale = vasink.enable(planted, CONFIG)
    vasink.enable(planted, vasink.PAIConfig(gamma=2.0))
    stale.reconfigure(CONFIG)
    assert torch.equal(logits(planted, inputs), with_var)
    vasink.disable(planted)
    assert torch.equal(logits(planted, inputs), base) and "generate" not in planted.__dict__
    assert (len(planted._forward_hooks), len(planted._forward_pre_hooks)) == hooks

    peer = vasink.enable(planted, vasink.VAFConfig(image_scale=3.0))
    with_peer = logits(planted, inputs)
    with vasink.var(planted, CONFIG):
        pass
    assert peer.active and getattr(planted, HANDLE_ATTR) is peer and torch.equal(logits(planted, inputs), with_peer)
    peer.disable()
    assert torch.equal(logits(planted, inputs), base)


@pytest.mark.parametrize("method", [CONFIG, vasink.VAFConfig(image_scale=3.0)])
def test_a_decoder_layer_run_outside_the_whole_models_call_is_refused(planted, method):
    """model.model(...) (or the language model alone) while a method is on would read the last call's token
    layout: refused, also after a forward that failed; the whole model still runs."""
    inputs = batch_inputs([prompt_ids()])
    with vasink.var(planted, method):
        planted(**inputs)
        with pytest.raises(RuntimeError, match="a decoder layer ran outside a call of the whole model"):
            planted.model(**inputs)
        with pytest.raises(RuntimeError, match="outside a call of the whole model"):
            planted.model.language_model(input_ids=inputs["input_ids"])
        with pytest.raises(RuntimeError):  # a forward that fails inside (one colour channel instead of three)
            planted(**{**inputs, "pixel_values": inputs["pixel_values"][:, :1]})
        with pytest.raises(RuntimeError, match="outside a call of the whole model"):
            planted.model(**inputs)
        planted(**inputs)
    planted.model(**inputs)  # off: any call


def test_an_eager_model_returns_every_layers_weights_the_redistributed_ones():
    """An eager model returns weights from every layer: with VAR on (fast path) outputs.attentions still has
    one entry per layer, the VAR layers' being the reference path's redistributed weights."""
    model = tiny_llava(attn_implementation="eager")
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids()])
    stock = model(**inputs, output_attentions=True).attentions
    with torch.no_grad(), vasink.var(model, CONFIG):
        fast = model(**inputs, output_attentions=True)
    with torch.no_grad(), vasink.var(model, CONFIG.replace(implementation="reference")):
        reference = model(**inputs, output_attentions=True)
    planter.remove()
    assert len(fast.attentions) == len(stock) == len(reference.attentions) == 5
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(fast.attentions, stock))
    for mine, theirs in zip(fast.attentions, reference.attentions):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.logits, reference.logits, rtol=1e-5, atol=1e-5)


def test_a_cache_free_step_over_other_images_is_a_new_prompt(planted):
    """A use_cache=False forward one token longer than the last prompt continues it only over the same images:
    other pixels are a new prompt (their own sinks), not the old prompt's sinks reused."""
    inputs = batch_inputs([prompt_ids()])
    longer = {**inputs, "input_ids": torch.cat([inputs["input_ids"], torch.tensor([[7]])], dim=1),
              "attention_mask": torch.ones(1, inputs["input_ids"].shape[1] + 1, dtype=torch.long)}
    with torch.no_grad(), vasink.var(planted, CONFIG) as handle:
        planted(**inputs, use_cache=False)
        planted(**longer, use_cache=False)
        assert handle.state.phase == "cache-free"
        planted(**inputs, use_cache=False)
        planted(**{**longer, "pixel_values": longer["pixel_values"].clone()}, use_cache=False)  # equal pixels
        assert handle.state.phase == "cache-free"
        planted(**inputs, use_cache=False)
        planted(**{**longer, "pixel_values": -longer["pixel_values"]}, use_cache=False)
        assert handle.state.phase == "prefill"


def test_sinks_are_measured_on_the_model_as_loaded_whatever_method_is_on(planted):
    inputs = batch_inputs([prompt_ids()])
    off = vasink.detect_sinks(planted, inputs, CONFIG)
    found_off = vasink.find_sink_dims(planted, tiny_processor())
    handle = vasink.enable(planted, CONFIG.replace(p=0.9))
    with_var = logits(planted, inputs)
    on = vasink.detect_sinks(planted, inputs, CONFIG)
    found_on = vasink.find_sink_dims(planted, tiny_processor())
    for layer in off.layers:
        assert torch.equal(on[layer].phi, off[layer].phi), layer
    assert (found_on.dims, found_on.suggested_tau) == (found_off.dims, found_off.suggested_tau)
    assert handle.active and handle.config.p == 0.9 and torch.equal(logits(planted, inputs), with_var)
    handle.disable()
    peer = vasink.enable(planted, vasink.VAFConfig(image_scale=3.0))  # a peer is switched back on too
    with_peer = logits(planted, inputs)
    assert torch.equal(vasink.detect_sinks(planted, inputs, CONFIG)[2].phi, off[2].phi)
    assert peer.active and torch.equal(logits(planted, inputs), with_peer)
    peer.disable()
