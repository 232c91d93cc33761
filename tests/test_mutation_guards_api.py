"""Guards against slips the other tests let through (issue 22, "What the tests missed"), second part: the
known sink-dimension table and ``layers`` at the edge, an analysis intervention through nested switches, the
organism's measurement helpers on tiny hand-made inputs, and the suggested tau held to its formula.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import IMAGE_TOKEN, SinkPlanter, batch_inputs, prompt_ids, tiny_llava, tiny_processor
from test_var_model import CONFIG, logits

import vasink
from vasink import VARConfig
from vasink.sinks import known_sink_dims, resolve_sink_dims, sink_dimension_value

# -- 6. the known table at another depth; layers equal to the layer count ---------------------------------------


def llama_text(layers, hidden=4096, vocab=32000):
    return SimpleNamespace(model_type="llama", hidden_size=hidden, num_hidden_layers=layers, vocab_size=vocab)


def test_known_sink_dims_need_the_same_depth_not_only_the_same_width():
    assert known_sink_dims(llama_text(32)).dims == (1415, 2533)  # LLaMA-2-7B
    assert resolve_sink_dims("auto", llama_text(32)) == (1415, 2533)
    for layers in (16, 40):  # width 4096 of LLaMA-2-7B, another depth: not that model
        assert known_sink_dims(llama_text(layers)) is None
        with pytest.raises(ValueError, match=f"layers={layers}"):
            resolve_sink_dims("auto", llama_text(layers))
    assert known_sink_dims(llama_text(40, hidden=5120)).dims == (2100, 4743)  # the 13B row at its own depth


@pytest.mark.parametrize("compat", ["paper", "released-code"])
def test_layers_equal_to_the_layer_count_is_out_of_range(compat):
    config = VARConfig(layers=(2, 5), compat=compat)
    with pytest.raises(ValueError, match=r"layers \[5\] out of range: the model has 5 decoder layers"):
        config.modified_layers(5)
    assert VARConfig(layers=(2, 4), compat=compat).modified_layers(5) == ((2,) if compat == "paper" else (2, 4))
    assert VARConfig(compat=compat).modified_layers(5) == ((2, 3) if compat == "paper" else (2, 3, 4))


def test_enable_with_layers_equal_to_the_layer_count_changes_nothing():
    model = tiny_llava()  # 5 decoder layers
    with pytest.raises(ValueError, match="out of range"):
        vasink.enable(model, CONFIG.replace(layers=(5,)))
    assert model.config.text_config._attn_implementation == "sdpa"
    assert not hasattr(model, "_vasink_handle") or not model._vasink_handle.active


# -- 7. an analysis intervention through a nested vasink.var and a second vasink.enable --------------------------


def test_intervention_survives_a_nested_var_and_a_second_enable():
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids()])
    seen = []

    def zero_visual_sinks(weights, plan, config, layer):
        seen.append(layer)
        sinks = (plan.visual_keys & plan.sink_keys)[:, None, None, :] & plan.eligible_queries[:, None, :, None]
        kept = torch.where(sinks, 0.0, weights)
        return kept / kept.sum(-1, keepdim=True)

    stock = logits(model, inputs)
    with vasink.var(model, CONFIG, intervention=zero_visual_sinks):
        ruled = logits(model, inputs)
        assert sorted(set(seen)) == [2, 3]
        with vasink.var(model, CONFIG.replace(p=0.3)):  # plain VAR inside: no rule
            seen.clear()
            inner = logits(model, inputs)
            assert seen == []
        seen.clear()
        torch.testing.assert_close(logits(model, inputs), ruled, rtol=0, atol=0)  # the rule is back
        assert sorted(set(seen)) == [2, 3]
        vasink.enable(model, CONFIG, intervention=zero_visual_sinks)  # a second enable: still one rule per layer
        seen.clear()
        torch.testing.assert_close(logits(model, inputs), ruled, rtol=0, atol=0)
        assert seen == [2, 3]
    assert torch.equal(logits(model, inputs), stock)
    with vasink.var(model, CONFIG.replace(p=0.3)):
        torch.testing.assert_close(inner, logits(model, inputs), rtol=0, atol=0)
    assert (ruled - stock).abs().max() > 1e-3 and (ruled - inner).abs().max() > 1e-3
    planter.remove()


# -- 8. the organism's measurement helpers, on tiny inputs --------------------------------------------------------


def test_normalize_answers():
    from vasink.organism.measure import _normalize

    assert _normalize("  Red Circle. ") == "red circle"
    assert _normalize("Two.") == "two"
    assert _normalize("yes\n") == "yes"
    assert _normalize("a   blue\tsquare") == "a blue square"
    assert _normalize("no.") == "no" and _normalize("No") == "no"


class FakeModel:
    """What forward_all reads from a model: config, set_attn_implementation and a forward."""

    def __init__(self):
        self.config = SimpleNamespace(text_config=SimpleNamespace(_attn_implementation="sdpa"),
                                      image_token_index=IMAGE_TOKEN)
        self.seen_implementation = None

    def set_attn_implementation(self, name):
        self.config.text_config._attn_implementation = name

    def __call__(self, **kwargs):
        self.seen_implementation = self.config.text_config._attn_implementation
        return SimpleNamespace(hidden_states=("h0", "h1", "h2"), attentions=("a0", "a1"))


def test_forward_all_counts_only_real_non_image_tokens_after_bos_as_text(monkeypatch):
    from vasink.organism import measure

    # left-padded batch: row 0 has two pads; BOS 1, image tokens 99, text after
    ids = torch.tensor([[0, 0, 1, 99, 99, 5, 6], [1, 7, 99, 99, 5, 6, 8]])
    mask = (torch.arange(7)[None] >= torch.tensor([[2], [0]])).long()
    monkeypatch.setattr(measure, "build_inputs", lambda processor, images, questions: {
        "input_ids": ids, "attention_mask": mask})
    model = FakeModel()
    out = measure.forward_all(model, None, [(SimpleNamespace(image=None), "q")] * 2)
    assert model.seen_implementation == "eager" and model.config.text_config._attn_implementation == "sdpa"
    assert out["hidden"] == ("h0", "h1") and out["attn"] == ("a0", "a1")
    as_list = lambda t: t.int().tolist()  # noqa: E731
    assert as_list(out["visual"]) == [[0, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0, 0]]
    assert as_list(out["bos"]) == [[0, 0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]]
    assert as_list(out["text"]) == [[0, 0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 1, 1, 1]]
    assert as_list(out["queries"]) == [[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1]]


def test_chair_counts_by_hand():
    from vasink.organism.measure import _chair

    scene = lambda *shapes: SimpleNamespace(objects=[SimpleNamespace(shape=s) for s in shapes])  # noqa: E731
    captions = ["a red circle and a blue star.", "a square, a square and a ring", "nothing here"]
    scenes = [scene("circle", "square"), scene("square", "bar", "cross"), scene("diamond")]
    got = _chair(captions, scenes)
    # caption 0: circle (ok), star (hallucinated); caption 1: square twice (ok), ring (hallucinated); caption 2: none
    # mentions 2 + 3 + 0 = 5, hallucinated 1 + 1 = 2; recalled {circle} + {square} = 2 of 2 + 3 + 1 = 6 objects
    assert got == pytest.approx({"chair_s": 2 / 3, "chair_i": 2 / 5, "recall": 2 / 6})


def test_background_patches_by_hand():
    from vasink.organism import build
    from vasink.organism.measure import _background_patches

    p, grid = build.PATCH_SIZE, 3
    mask = np.zeros((grid * p, grid * p), bool)
    mask[0, 0] = True  # one pixel in patch (0, 0)
    mask[p + 3, 2 * p + p - 1] = True  # one pixel in patch (1, 2)
    mask[2 * p:, :p] = True  # all of patch (2, 0): the set is not symmetric, so a transposed grid differs
    got = _background_patches(SimpleNamespace(object_mask=mask), grid)
    want = np.ones(grid * grid, bool)
    want[[0 * grid + 0, 1 * grid + 2, 2 * grid + 0]] = False  # row-major, as the visual tokens
    assert got.tolist() == want.tolist()


# -- 9. the suggested tau is its formula --------------------------------------------------------------------------


def test_suggested_tau_is_the_geometric_middle_of_its_two_quantiles():
    """sqrt(q10(first token's phi) * q90(upper quartile of the other text tokens' phi)), over the searched layers,
    recomputed here from the hidden states entering each layer (not from find_sink_dims' numbers)."""
    from vasink.discovery import DEFAULT_PROMPTS, build_prompt_inputs, calibration_images

    model = tiny_llava()
    planter = SinkPlanter(model, patches=(1,))
    processor = tiny_processor()
    found = vasink.find_sink_dims(model, processor)
    assert found.dims == (5, 40) and found.searched_layers == (2, 3, 4)

    def phi(x):  # max over the sink dims of |x_d| / RMS(x), per token
        return x[:, list(found.dims)].abs().amax(-1) / x.pow(2).mean(-1).sqrt()

    first, upper = [], []
    layers = model.model.language_model.layers
    captured = {}
    hooks = [layer.register_forward_pre_hook(lambda m, a, k, i=i: captured.__setitem__(i, (a[0] if a else
             k["hidden_states"])[0]), with_kwargs=True) for i, layer in enumerate(layers)]
    images = calibration_images()
    for index, prompt in enumerate(DEFAULT_PROMPTS):
        inputs = build_prompt_inputs(processor, images[index % len(images)], prompt)
        with torch.no_grad():
            model(**inputs)
        ids = inputs["input_ids"][0]
        text = torch.nonzero(ids != IMAGE_TOKEN).flatten()
        bos, others = int(text[0]), text[1:]
        for layer in found.searched_layers:
            x = captured[layer].float()  # (T, D)
            first.append(float(phi(x)[bos]))
            # the ordinary tokens' phi (sinks.py's phi, tested on its own) of the bfloat16 copy find_sink_dims keeps
            ordinary = sink_dimension_value(x.to(torch.bfloat16), found.dims)[others]
            upper.append(float(torch.quantile(ordinary, 0.75)))
    for hook in hooks:
        hook.remove()
    planter.remove()
    assert len(first) == len(DEFAULT_PROMPTS) * 3
    want = math.sqrt(float(np.quantile(first, 0.1)) * float(np.quantile(upper, 0.9)))
    assert found.suggested_tau == pytest.approx(want, rel=1e-5)
    # the fixture tells the formula from a neighbour (the median ordinary level instead of its 90th percentile)
    assert abs(math.sqrt(float(np.quantile(first, 0.1)) * float(np.median(upper))) - want) > 1e-2 * want
