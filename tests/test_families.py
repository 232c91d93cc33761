"""VAR and sink detection on tiny random models of every supported family (real transformers classes).

Per family: VAR off is bit-identical; fast = reference; planted sinks are found at exactly the planted
positions; VAR's change at the first modified layer equals the loop oracle on the stock eager weights;
generate with cache = without; a padded batch = each prompt alone; multi-image (and video) prompts.
"""

import math

import pytest
import torch
from conftest import DEVICE, force_fused_kernel
from families_fixtures import (BOS, FAMILIES, IMAGE, PAD, PROCESSORS, SINK_DIMS, VIDEO, Image, Planter,
                               planted_positions)
from test_redistribute import loop_oracle
from torch import nn

import vasink
from vasink import VARConfig
from vasink.analysis import image_grids
from vasink.discovery import build_prompt_inputs, calibration_images, find_sink_dims
from vasink.models import adapter_for
from vasink.sinks import known_sink_dims

CONFIG = VARConfig(tau=4.0, rho=0.5, p=0.6, min_visual_attention=0.2, sink_dims=SINK_DIMS)
NAMES = sorted(FAMILIES)
_MODELS: dict = {}


def model_of(name: str, attn: str = "sdpa"):
    if (name, attn) not in _MODELS:
        _MODELS[name, attn] = FAMILIES[name].build(attn)
    return _MODELS[name, attn]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(params=NAMES)
def family(request):
    return FAMILIES[request.param]


@pytest.fixture
def planted(family):
    model = model_of(family.name)
    planter = Planter(model, planted_positions())
    yield model
    planter.remove()
    vasink.disable(model)


def logits(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs).logits


def generate(model, inputs, use_cache=True, new=4):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False, use_cache=use_cache)
    return out[:, inputs["input_ids"].shape[1]:]


def newline_positions(model, inputs) -> torch.Tensor:
    """Independent of the adapter: where the embeddings entering layer 0 equal the model's image_newline."""
    newline = getattr(getattr(model, "model", model), "image_newline", None)
    if newline is None:
        return torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
    captured = {}

    def capture(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["hidden_states"]

    hook = adapter_for(model).decoder_layers(model)[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        logits(model, inputs)
    finally:
        hook.remove()
    return (captured["x"] == newline.to(captured["x"].dtype)).all(-1)


def expected_visual(model, inputs) -> torch.Tensor:
    """V from first principles: image / video placeholder ids, minus newline embeddings, on real tokens."""
    ids = inputs["input_ids"]
    return torch.isin(ids, torch.tensor([IMAGE, VIDEO], device=ids.device)) & ~newline_positions(model, inputs) \
        & inputs["attention_mask"].bool()


def test_var_changes_every_prompt_fast_equals_reference_off_is_bit_identical(family, planted):
    inputs = family.inputs(planted, family.prompts())
    text_config = adapter_for(planted).text_config(planted)
    base = logits(planted, inputs)
    handle = vasink.enable(planted, CONFIG)
    fast = logits(planted, inputs)
    handle.reconfigure(CONFIG.replace(implementation="reference"))
    reference = logits(planted, inputs)
    handle.disable()
    after = logits(planted, inputs)
    assert torch.equal(after, base)
    assert text_config._attn_implementation == "sdpa"
    real = inputs["attention_mask"].bool()
    for row in range(real.shape[0]):  # one image, several images, video: VAR acts on each
        assert (fast[row] - base[row])[real[row]].abs().max() > 1e-4, row
    torch.testing.assert_close(fast[real], reference[real], rtol=1e-5, atol=1e-5)


def test_detect_sinks_finds_exactly_the_planted_tokens(family, planted):
    inputs = family.inputs(planted, family.prompts())
    report = vasink.detect_sinks(planted, inputs, CONFIG)
    planted_mask = planted_positions()(inputs["input_ids"], inputs["attention_mask"])
    visual = expected_visual(planted, inputs)
    assert torch.equal(report[2].visual_mask, visual)
    for layer in range(2, 5):
        assert torch.equal(report[layer].sink_mask, planted_mask), layer
        assert torch.equal(report[layer].sink_mask & visual, planted_mask & visual), layer
    assert (planted_mask & visual).sum(1).min() >= 1, "every prompt has a planted visual sink"
    assert not report[0].sink_mask.any() and not report[1].sink_mask.any()


def test_var_change_equals_oracle_on_stock_eager_weights(family):
    """Layer 2 is the first modified layer: its input is the stock one, so VAR's change can be recomputed."""
    model = model_of(family.name, "eager")
    planter = Planter(model, planted_positions())
    prompts = family.prompts()
    inputs = family.inputs(model, [prompts[1], prompts[-1]])  # Gemma 3: prompts[1] outruns the sliding window
    config = CONFIG.replace(implementation="reference")
    try:
        with torch.no_grad():
            stock = model(**inputs, output_attentions=True)
            report = vasink.detect_sinks(model, inputs, config)
            with vasink.var(model, config):
                modified = model(**inputs, output_attentions=True)
        visual = expected_visual(model, inputs)
    finally:
        planter.remove()
    placeholder = torch.isin(inputs["input_ids"], torch.tensor([IMAGE, VIDEO], device=DEVICE))
    queries = (placeholder.long().cumsum(-1) > 0) & ~placeholder & inputs["attention_mask"].bool()
    want = loop_oracle(stock.attentions[2], visual, report[2].sink_mask, queries,
                       config.rho, config.p, config.min_visual_attention)
    got = modified.attentions[2]
    assert not torch.allclose(got, stock.attentions[2])
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(modified.attentions[1], stock.attentions[1], rtol=0, atol=0)


def test_generate_cached_equals_uncached(family, planted):
    """Same tokens and same step logits: decode steps (sliding-window layers included) reuse the prefill's sinks."""
    inputs = family.inputs(planted, family.prompts())
    stock = generate_scores(planted, inputs)
    with vasink.var(planted, CONFIG):
        cached = generate_scores(planted, inputs)
        uncached = generate_scores(planted, inputs, use_cache=False)
    assert torch.equal(cached[0], uncached[0])
    torch.testing.assert_close(cached[1], uncached[1], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(cached[1][:, 1:], stock[1][:, 1:], atol=1e-4), "VAR must change the decode steps"


def generate_scores(model, inputs, use_cache=True, new=4):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False, use_cache=use_cache,
                             output_logits=True, return_dict_in_generate=True)
    return out.sequences[:, inputs["input_ids"].shape[1]:], torch.stack(out.logits, dim=1)  # (B, new, V)


def test_var_without_sinks_keeps_the_stock_masks(family):
    """VAR on with no sink over tau: every layer runs the stock kernel on vasink's masks (sliding window,
    bidirectional image blocks, prefix-LM), so the output must equal the stock model's exactly."""
    model = model_of(family.name)
    inputs = family.inputs(model, family.prompts())
    base = logits(model, inputs)
    with vasink.var(model, CONFIG.replace(tau=7.9)):  # above any phi of a 64-wide model without planting
        assert torch.equal(logits(model, inputs), base)


def test_padded_batch_equals_each_prompt_alone(family, planted):
    prompts = family.prompts()
    with vasink.var(planted, CONFIG):
        together = generate(planted, family.inputs(planted, prompts))
        for row, prompt in enumerate(prompts):
            alone = generate(planted, family.inputs(planted, [prompt]))
            assert torch.equal(alone[0], together[row]), row


def test_image_grids_cover_exactly_the_visual_tokens(family):
    model = model_of(family.name)
    inputs = family.inputs(model, family.prompts())
    grids = image_grids(model, inputs)
    visual = expected_visual(model, inputs)
    for row, per_image in enumerate(grids):
        covered = torch.zeros_like(visual[row])
        for rows, cols, positions in per_image:
            assert positions.shape == (rows * cols,)
            assert not covered[positions].any(), "grids overlap"
            covered[positions] = True
        assert torch.equal(covered, visual[row]), row


EXPECTED_GRIDS = {  # (rows, cols) per grid of the batch's prompts, as each family's processor lays them out
    "qwen2_vl": [[(2, 2)], [(2, 4)], [(2, 2), (4, 2)], [(2, 2), (2, 2)]],
    "mistral3": [[(2, 2)], [(2, 4)], [(2, 2), (4, 2)]],
    "internvl": [[(2, 2)], [(2, 2)] * 3, [(2, 2)] * 4, [(2, 2)] * 2],
    "paligemma": [[(4, 4)], [(4, 4)], [(4, 4), (4, 4)]],
    "llava_next": [[(4, 4), (4, 4)], [(4, 4), (4, 8)], [(4, 4), (4, 4), (4, 4), (8, 4)]],
    "llava_onevision": [[(4, 4), (4, 4)], [(4, 4), (2, 5)], [(4, 4), (4, 4)], [(2, 2), (2, 2)]],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_GRIDS))
def test_image_grid_shapes(name):
    model = model_of(name)
    inputs = FAMILIES[name].inputs(model, FAMILIES[name].prompts())
    shapes = [[(g.rows, g.cols) for g in per_image] for per_image in image_grids(model, inputs)]
    assert shapes == EXPECTED_GRIDS[name]


class StubProcessor:
    """Stands in for a family's processor: the chat template text is ignored, inputs come from the family."""

    chat_template = "stub"

    def __init__(self, family, model):
        self.family, self.model, self.calls = family, model, 0

    def apply_chat_template(self, messages, add_generation_prompt=True):
        assert messages[0]["content"][0]["type"] == "image"
        return "prompt"

    def __call__(self, images=None, text=None, return_tensors="pt"):
        self.calls += 1
        inputs = self.family.inputs(self.model, [[BOS, 5, Image(self.calls), 7, 8, 9]])
        return _BatchFeature(inputs)


class _BatchFeature(dict):
    def to(self, device):
        return self


def test_find_sink_dims_on_each_family(family):
    """Discovery through the family's processor (its chat template and image tokens) where one can be built
    offline without torchvision, else through a stand-in that returns the family's inputs."""
    model = model_of(family.name)
    processor = PROCESSORS[family.name]() if family.name in PROCESSORS else StubProcessor(family, model)
    planter = Planter(model, planted_positions(patches=()))
    try:
        found = find_sink_dims(model, processor)
    finally:
        planter.remove()
    assert found.dims == SINK_DIMS
    hidden = adapter_for(model).text_config(model).hidden_size
    assert 2.0 < found.suggested_tau < math.sqrt(hidden)


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_processor_inputs_sinks_and_grids(name):
    """The processor's own prompt: planted visual sinks are found, and the grids cover exactly V."""
    model = model_of(name)
    inputs = build_prompt_inputs(PROCESSORS[name](), calibration_images(56)[2], "describe the image .").to(DEVICE)
    inputs.pop("labels", None)  # PaliGemma's processor adds them
    assert int((inputs["input_ids"] == IMAGE).sum()) > 0
    planter = Planter(model, planted_positions())
    try:
        report = vasink.detect_sinks(model, inputs, CONFIG)
        with vasink.var(model, CONFIG):
            generate(model, inputs)
    finally:
        planter.remove()
    visual = expected_visual(model, inputs)
    planted_mask = planted_positions()(inputs["input_ids"], inputs["attention_mask"])
    assert torch.equal(report[2].sink_mask & visual, planted_mask & visual)
    covered = torch.zeros_like(visual[0])
    for _, _, positions in image_grids(model, inputs)[0]:
        covered[positions] = True
    assert torch.equal(covered, visual[0])


def test_unknown_family_lists_supported_classes_and_how_to_register():
    class TinyVLM(nn.Module):
        pass

    with pytest.raises(vasink.UnsupportedModelError) as error:
        vasink.enable(TinyVLM(), CONFIG)
    message = str(error.value)
    for cls in ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
                "Qwen3VLForConditionalGeneration", "Gemma3ForConditionalGeneration", "LlavaNextForConditionalGeneration",
                "LlavaOnevisionForConditionalGeneration", "InternVLForConditionalGeneration",
                "Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration",
                "Mistral3ForConditionalGeneration", "PaliGemmaForConditionalGeneration"):
        assert cls in message
    assert "register_adapter(ModelAdapter(" in message


def test_registered_adapter_for_a_new_class_works():
    from families_fixtures import FAMILIES as fams

    model = fams["internvl"].build()

    class RenamedVLM(type(model)):
        pass

    model.__class__ = RenamedVLM
    assert adapter_for(model).name == "internvl"  # a subclass falls back to its base class's adapter
    adapter = vasink.register_adapter(vasink.ModelAdapter(
        name="renamed", model_classes=("RenamedVLM",), text_config_key="text_config",
        decoder_layers_path="model.language_model.layers", visual_token_id_attrs=("image_token_id",)))
    try:
        assert adapter_for(model) is adapter  # its own registration comes first
        inputs = fams["internvl"].inputs(model, [[BOS, 5, Image(1), 7, 8]])
        base = logits(model, inputs)
        with vasink.var(model, CONFIG):
            logits(model, inputs)
        assert torch.equal(logits(model, inputs), base)
    finally:
        vasink.models._ADAPTERS.pop("RenamedVLM")
    assert adapter.name == "renamed"


def test_known_sink_dims_match_the_real_qwen2_vl_7b_config():
    from transformers import Qwen2VLConfig

    # Qwen/Qwen2-VL-7B-Instruct's config.json is flat: the text fields sit at the top level.
    config = Qwen2VLConfig(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                           num_key_value_heads=4, vocab_size=152064, vision_config={"hidden_size": 3584})
    assert config.text_config.model_type == "qwen2_vl_text"
    entry = known_sink_dims(config.text_config)
    assert entry is not None and entry.dims == (458, 2570)


def test_placeholder_without_sizes_is_a_clear_error():
    model = model_of("llava_next")
    inputs = FAMILIES["llava_next"].inputs(model, [[BOS, 5, Image(1), 7, 8]])
    inputs.pop("image_sizes")
    with pytest.raises(ValueError, match="image_sizes"):
        vasink.detect_sinks(model, inputs, CONFIG)


def test_pad_token_is_never_visual(family):
    model = model_of(family.name)
    inputs = family.inputs(model, family.prompts())
    visual = adapter_for(model).visual_mask(model, inputs["input_ids"],
                                            **{k: v for k, v in inputs.items() if k != "input_ids"})
    assert not visual[inputs["input_ids"] == PAD].any()


def test_chunked_prefill_over_image_tokens_is_a_clear_error():
    model = model_of("qwen2_vl")
    inputs = FAMILIES["qwen2_vl"].inputs(model, [[BOS, 5, Image(1), 7, 8]])
    with vasink.var(model, CONFIG), pytest.raises(RuntimeError, match="chunked prefill"):
        model.generate(**inputs, max_new_tokens=1, prefill_chunk_size=3)


class ExpandingVLM(nn.Module):
    """Remote-code style: one media token in input_ids becomes four embeddings inside forward."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        expanded = input_ids[0].repeat_interleave(1 + 3 * (input_ids[0] == IMAGE).long())[None]
        return self.inner(input_ids=expanded, **kwargs)


def test_model_that_expands_placeholders_inside_forward_is_a_clear_error():
    inner = FAMILIES["internvl"].build()
    model = ExpandingVLM(inner)

    class WrappedAdapter(vasink.ModelAdapter):  # the README's pattern for a backbone inside a wrapper
        def set_text_attention(self, model, implementation):
            model.inner.set_attn_implementation({"text_config": implementation})

    vasink.register_adapter(WrappedAdapter(
        name="expanding", model_classes=("ExpandingVLM",), text_config_key="text_config",
        decoder_layers_path="inner.model.language_model.layers", visual_token_id_attrs=("image_token_id",)))
    inputs = FAMILIES["internvl"].inputs(inner, [[BOS, 5, Image(1), 7, 8]])
    ids = inputs["input_ids"][0]
    first = int((ids == IMAGE).nonzero()[0])
    inputs["input_ids"] = torch.cat([ids[:first + 1], ids[first + 4:]])[None]  # one media token for four
    inputs.pop("attention_mask")
    try:
        with vasink.var(model, CONFIG), pytest.raises(RuntimeError, match="expands placeholders"):
            model(**inputs)
    finally:
        vasink.models._ADAPTERS.pop("ExpandingVLM")


def test_attention_logit_softcapping_is_refused():
    """PaliGemma 2 runs a Gemma 2 decoder whose attention soft-caps logits: VAR's paths do not, so refuse."""
    from transformers import Gemma2Config, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=7)
    text = Gemma2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, vocab_size=120, attn_logit_softcapping=50.0)
    model = PaliGemmaForConditionalGeneration(PaliGemmaConfig(vision_config=vision, text_config=text,
                                                              image_token_index=IMAGE, projection_dim=64)).eval()
    model.set_attn_implementation("eager")
    with pytest.raises(ValueError, match="soft-caps"):
        vasink.enable(model, CONFIG)
    assert model.config.text_config._attn_implementation == "eager"


@pytest.mark.parametrize("name", NAMES)
def test_fused_kernel_equals_reference(name, monkeypatch):
    """The GPU kernel (run by Triton's interpreter on CPU) on every family: prefill logits and every decode
    step's scores, sliding-window layers (Gemma 3, Mistral 3) and memoized key flags included."""
    pytest.importorskip("triton")
    calls = force_fused_kernel(monkeypatch)
    family = FAMILIES[name]
    model = model_of(name)
    planter = Planter(model, planted_positions())
    inputs = family.inputs(model, family.prompts())
    try:
        with vasink.var(model, CONFIG):
            fast = logits(model, inputs)
            fast_steps = generate_scores(model, inputs)
        assert calls, "the fused kernel must run"
        with vasink.var(model, CONFIG.replace(implementation="reference")):
            reference = logits(model, inputs)
            reference_steps = generate_scores(model, inputs)
    finally:
        planter.remove()
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(fast[real], reference[real], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast_steps[0], reference_steps[0])
    torch.testing.assert_close(fast_steps[1], reference_steps[1], rtol=1e-4, atol=1e-4)


def test_analysis_capture_reads_the_token_layout_var_uses():
    """LLaVA-NeXT's image-newline placeholders are neither visual keys nor query rows, in VAR and in analysis."""
    from vasink.analysis import capture_forward

    model = model_of("llava_next")
    inputs = FAMILIES["llava_next"].inputs(model, [[BOS, 5, Image(1), 7, 8, 9]])
    handle = vasink.enable(model, CONFIG)
    logits(model, inputs)
    var_eligible, var_visual = handle.state.eligible_queries[0].cpu(), handle.state.visual_keys[0].cpu()
    handle.disable()
    capture = capture_forward(model, inputs, CONFIG)
    newlines = newline_positions(model, inputs)[0].cpu()
    assert newlines.any()
    assert torch.equal(capture.eligible, var_eligible) and torch.equal(capture.visual, var_visual)
    assert not torch.isin(capture.query_positions, newlines.nonzero().flatten()).any()


@pytest.mark.parametrize("name, key", [("mistral3", "image_sizes"), ("qwen2_vl", "image_grid_thw")])
def test_image_sizes_that_do_not_match_the_prompt_are_a_clear_error(name, key):
    model = model_of(name)
    inputs = FAMILIES[name].inputs(model, [[BOS, 5, Image(1), 7, 8]])
    inputs[key] = inputs[key] * 2  # more visual tokens than the prompt holds
    with pytest.raises(ValueError, match=f"{key} make .* visual tokens but the prompt has"):
        image_grids(model, inputs)
