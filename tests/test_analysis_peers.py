"""PAI's and VAF's attention weights (asked for with output_attentions) and the analysis that draws them next to
VAR's, on tiny random-weight models built from configs (no download).

The weights are checked against an independent float64 loop over batch rows and heads of each method's official
formula (docs/peers.md), over queries and keys recorded by a wrapper the test registers at transformers'
attention seam; its spans come from the token ids (image / video placeholders), not from vasink's adapters.
"""

import json

import numpy as np
import pytest
import torch
from conftest import IMAGE_TOKEN, SINK_DIMS, batch_inputs, prompt_ids, tiny_llava, tiny_processor
from families_fixtures import FAMILIES, IMAGE, VIDEO
from PIL import Image
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import vasink
from vasink.analysis import capture_forward, text_to_image_attention
from vasink.analysis.heads import MassChange
from vasink.analysis.runs import analyze_attention, analyze_heads
from vasink.analysis.samples import AnalysisSample, build_inputs
from vasink.models import adapter_for
from vasink.peers.attention import peer_attention_forward

CONFIG = vasink.VARConfig(tau=4.0, rho=0.5, p=0.6, min_visual_attention=0.2, sink_dims=SINK_DIMS)
RECORDER = "analysis-peers-test-recorder"
VISUAL_IDS = (IMAGE_TOKEN, IMAGE, VIDEO)
VCD_MESSAGE = "VCD changes only the output logits"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def llava(one_thread):
    return tiny_llava(attn_implementation="sdpa"), tiny_processor()


def image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (28, 28, 3), dtype=np.uint8))


# -- the independent reference -----------------------------------------------------------------------------


def recording_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """vasink's peer attention, its inputs and returned weights kept on the module (one entry per call)."""
    out, weights = peer_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                          dropout=dropout, **kwargs)
    module._test_calls.append({"query": query, "key": key, "mask": attention_mask, "scaling": scaling,
                               "weights": weights})
    return out, weights


AttentionInterface.register(RECORDER, recording_attention)
AttentionMaskInterface.register(RECORDER, sdpa_mask)


def recorded_calls(model, inputs, config, **call):
    """Per decoder layer, the recorded calls of ``model(**inputs, **call)`` (or generate with ``call``) under
    ``config``."""
    adapter = adapter_for(model)
    modules = adapter.attention_modules(model)
    for module in modules:
        module._test_calls = []
    with vasink.var(model, config), torch.no_grad():
        adapter.set_text_attention(model, RECORDER)  # vasink.var puts the model back as loaded afterwards
        if "max_new_tokens" in call:
            model.generate(**inputs, do_sample=False, **call)
        else:
            model(**inputs, **call)
    calls = [module._test_calls for module in modules]
    for module in modules:
        del module._test_calls
    return calls


def reference_weights(call, input_ids, attention_mask, layer, config, num_layers):
    """Softmax(z) in float64 per (batch row, head), with the method's edit: PAI ``z + alpha|z|`` on the image
    columns of the last row, after the mask; VAF ``z * image_scale`` on image columns and ``z * system_scale`` on
    the real columns before the first image, before the mask, on the real non-image rows after the first image
    (every row of a decode step). (B, H, Q, K), NaN on rows with no allowed key."""
    query, key, mask = call["query"].double(), call["key"].double(), call["mask"]
    batch, heads, num_queries, head_dim = query.shape
    num_keys = key.shape[2]
    scaling = call["scaling"] if call["scaling"] is not None else head_dim ** -0.5
    groups = heads // key.shape[1]
    if mask is None:
        allowed = torch.ones(num_queries, num_keys, dtype=torch.bool).tril(num_keys - num_queries)[None, None]
    else:
        allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    allowed = allowed.expand(batch, 1, num_queries, num_keys)
    ids = input_ids[:, :num_keys]
    real = attention_mask[:, :num_keys].bool()
    edited = layer in config.modified_layers(num_layers)
    out = torch.empty(batch, heads, num_queries, num_keys, dtype=torch.float64)
    for b in range(batch):
        visual = torch.tensor([int(t) in VISUAL_IDS for t in ids[b].tolist()]) & real[b]
        first = int(visual.nonzero()[0])
        system = real[b] & (torch.arange(num_keys) < first)
        positions = torch.arange(num_keys - num_queries, num_keys)  # the queries' own positions
        for h in range(heads):
            z = query[b, h] @ key[b, h // groups].T * scaling  # (Q, K)
            for row, position in enumerate(positions.tolist()):
                after_image = position > first and not visual[position] and real[b, position]
                if edited and isinstance(config, vasink.VAFConfig) and (num_queries == 1 or after_image):
                    z[row, visual] = z[row, visual] * config.image_scale
                    z[row, system] = z[row, system] * config.system_scale
            z = z.masked_fill(~allowed[b, 0], float("-inf"))
            if edited and isinstance(config, vasink.PAIConfig):
                image_keys = visual & allowed[b, 0, -1]
                z[-1, image_keys] = z[-1, image_keys] + config.alpha * z[-1, image_keys].abs()
            out[b, h] = torch.softmax(z, -1)
    return out


def llava_batch():
    return batch_inputs([prompt_ids(), prompt_ids(prefix=(1, 5, 6, 4), suffix=(7, 8))])


def family_batch(name):
    family = FAMILIES[name]
    model = family.build("sdpa")
    return model, family.inputs(model, family.prompts()[:2])


PEER_CONFIGS = {"pai": vasink.PAIConfig(alpha=0.5, gamma=1.0, layers=(1, 3)),
                "vaf": vasink.VAFConfig(image_scale=1.6, system_scale=0.7, layers=(1, 3))}


@pytest.mark.parametrize("method", sorted(PEER_CONFIGS))
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_peer_weights_equal_a_float64_loop_of_the_formula(family, method, llava):
    """Prefill of a left-padded batch and two decode steps: in every layer the weights the peer path returns are
    the reference's (softmax of the edited logits in its layers, of the stock logits elsewhere); rows sum to 1."""
    model, inputs = (llava[0], llava_batch()) if family == "llava" else family_batch(family)
    config = PEER_CONFIGS[method]
    num_layers = len(adapter_for(model).decoder_layers(model))
    calls = recorded_calls(model, inputs, config, max_new_tokens=3, output_attentions=True,
                           return_dict_in_generate=True)
    generated = calls[0]  # the same number of calls per layer: the prefill, then one per decoded token
    assert len(generated) == 3
    new = torch.zeros(inputs["input_ids"].shape[0], 2, dtype=torch.long)  # the decoded ids are text, never visual
    input_ids = torch.cat([inputs["input_ids"], new], dim=1)
    attention_mask = torch.cat([inputs["attention_mask"], torch.ones_like(new)], dim=1)
    real_rows = inputs["attention_mask"].bool()
    for layer, layer_calls in enumerate(calls):
        for step, call in enumerate(layer_calls):
            got = call["weights"].double()
            expected = reference_weights(call, input_ids, attention_mask, layer, config, num_layers)
            rows = real_rows if step == 0 else torch.ones(got.shape[0], 1, dtype=torch.bool)  # (B, Q)
            picked = rows[:, None, :, None].expand_as(got)
            torch.testing.assert_close(got[picked], expected[picked], rtol=1e-5, atol=1e-6,
                                       msg=f"layer {layer}, call {step}")
            torch.testing.assert_close(got.sum(-1)[rows[:, None, :].expand(-1, got.shape[1], -1)],
                                       torch.ones(int(rows.sum()) * got.shape[1], dtype=torch.float64))
    edited = [layer for layer in range(num_layers) if layer in config.modified_layers(num_layers)]
    assert edited == [1, 3]


def test_weights_only_when_asked_and_the_same_output(llava):
    """Without output_attentions the fast path runs and returns no weights; asked, the same logits (to float
    rounding: eager instead of SDPA) come with the weights."""
    model, _ = llava
    inputs = llava_batch()
    for config in PEER_CONFIGS.values():
        silent = recorded_calls(model, inputs, config)
        assert all(call["weights"] is None for layer in silent for call in layer)
        with vasink.var(model, config), torch.no_grad():
            fast = model(**inputs).logits
            asked = model(**inputs, output_attentions=True)
        assert len(asked.attentions) == 5 and all(a is not None for a in asked.attentions)
        torch.testing.assert_close(asked.logits, fast, rtol=1e-5, atol=1e-5)


def test_a_method_off_gives_the_stock_weights_exactly(llava):
    """After the method's block the model's eager weights and SDPA logits are bit-identical to stock; while it is
    on, the layers before its first layer and the rows it never reaches are the stock weights exactly."""
    model, processor = llava
    inputs = build_inputs(processor, image(), "what is in the image ?")
    adapter = adapter_for(model)

    def eager_weights():
        adapter.set_text_attention(model, "eager")
        try:
            with torch.no_grad():
                return model(**inputs, output_attentions=True).attentions
        finally:
            adapter.set_text_attention(model, "sdpa")

    with torch.no_grad():
        stock_logits = model(**inputs).logits
    stock = eager_weights()
    for name, config in (("pai", vasink.PAIConfig(layers=(2, 3))), ("vaf", vasink.VAFConfig(layers=(2, 3)))):
        with vasink.var(model, config), torch.no_grad():
            on = model(**inputs, output_attentions=True).attentions
        for layer in (0, 1):
            assert torch.equal(on[layer], stock[layer]), (name, layer)
        if name == "pai":  # only the last row: the others see neither its edit nor its hidden state
            assert all(torch.equal(on[layer][:, :, :-1], stock[layer][:, :, :-1]) for layer in range(5))
        else:  # only rows after the image: the tokens before it see nothing of it
            assert all(torch.equal(on[layer][:, :, :3], stock[layer][:, :, :3]) for layer in range(5))
        assert not torch.equal(on[2], stock[2])
        after = eager_weights()
        assert all(torch.equal(a, s) for a, s in zip(after, stock))
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, stock_logits)


# -- the analysis: captures, maps, heads, figures ----------------------------------------------------------


def test_pai_changes_the_analysis_data_only_in_its_rows_and_layers(llava):
    model, processor = llava
    inputs = build_inputs(processor, image(), "what is in the image ?")
    base = capture_forward(model, inputs, CONFIG)
    run = capture_forward(model, inputs, CONFIG, method=vasink.PAIConfig(alpha=0.5, layers=(2, 3)), stock_twin=True)
    last = len(base.query_positions) - 1
    own = (run.weights - run.stock_weights).abs().amax(dim=(1, 3))  # (L, R): the method's own edit per row
    assert own[[2, 3], last].min() > 1e-4
    own[[2, 3], last] = 0
    assert own.max() == 0  # nothing else: not layers 0, 1, 4, not the other rows
    total = (run.weights - base.weights).abs().amax(dim=(1, 3))  # (L, R): against the model as loaded
    assert total[:2].max() == 0 and total[:, :last].max() == 0
    assert total[2:, last].min() > 0  # layer 4 too: its last row reads what layers 2 and 3 changed

    change = MassChange(run.num_layers, run.num_heads)
    change.add(base, run)
    result = change.result()
    rows = len(base.eligible_rows())
    per_layer = np.abs(result["own"]).max(-1)
    assert per_layer[[0, 1, 4]].max() == 0 and per_layer[[2, 3]].min() > 0
    direct = (run.weights - run.stock_weights)[:, :, last][..., base.visual].sum(-1).double().numpy()  # (L, H)
    np.testing.assert_allclose(result["own"], direct / rows, rtol=1e-6, atol=1e-12)

    off = text_to_image_attention(model, inputs, CONFIG, layers=[0, 1])
    pai = text_to_image_attention(model, inputs, CONFIG, method=vasink.PAIConfig(alpha=0.5, layers=(2, 3)),
                                  layers=[0, 1])
    torch.testing.assert_close(pai, off, rtol=1e-6, atol=1e-7)
    pai_2 = text_to_image_attention(model, inputs, CONFIG, method=vasink.PAIConfig(alpha=0.5, layers=(2, 3)),
                                    layers=[2])
    assert pai_2.sum() > text_to_image_attention(model, inputs, CONFIG, layers=[2]).sum() + 1e-4  # more to the image


def test_vaf_changes_the_analysis_data_only_in_its_layers(llava):
    model, processor = llava
    inputs = build_inputs(processor, image(), "what is in the image ?")
    base = capture_forward(model, inputs, CONFIG)
    run = capture_forward(model, inputs, CONFIG, method=vasink.VAFConfig(image_scale=1.6, layers=(2,)),
                          stock_twin=True)
    eligible = base.eligible_rows()
    own = (run.weights - run.stock_weights).abs().amax(dim=(1, 3))  # (L, R)
    assert own[2, eligible].min() > 1e-5
    own[2, eligible] = 0
    assert own.max() == 0  # only layer 2, only the rows after the image
    before_image = ~base.eligible[base.query_positions]  # text rows before the image: BOS, "user", ":"
    total = (run.weights - base.weights).abs().amax(dim=(1, 3))
    assert total[:2].max() == 0 and total[:, before_image].max() == 0 and total[3:, eligible].min() > 0

    change = MassChange(run.num_layers, run.num_heads)
    change.add(base, run)
    per_layer = np.abs(change.result()["own"]).max(-1)
    assert per_layer[2] > 0 and np.delete(per_layer, 2).max() == 0
    assert np.abs(change.result()["total"]).max(-1)[3] > 0  # the total change reaches the later layers


def test_vcd_is_refused_with_the_attention_side_methods_named(llava, tmp_path, capsys):
    model, processor = llava
    inputs = build_inputs(processor, image(), "what is in the image ?")
    for call in (lambda: capture_forward(model, inputs, CONFIG, method="vcd"),
                 lambda: capture_forward(model, inputs, CONFIG, method=vasink.VCDConfig()),
                 lambda: text_to_image_attention(model, inputs, CONFIG, method="vcd"),
                 lambda: analyze_attention(model, processor, image(), "what is in the image ?", CONFIG, tmp_path,
                                           methods=("var", "vcd")),
                 lambda: analyze_heads(model, processor, [], CONFIG, tmp_path, methods="pai,vcd")):
        with pytest.raises(ValueError, match=f"{VCD_MESSAGE}.*not the attention.*var, pai, vaf"):
            call()
    from vasink.cli import main

    for command in (["attention", "--methods", "var,vcd"], ["heads", "--methods", "vcd"]):
        assert main([*command, "--out", str(tmp_path / "cli")]) == 2
        err = capsys.readouterr().err
        assert VCD_MESSAGE in err and "var, pai, vaf" in err, err
    assert main(["attention", "--methods", "pia", "--out", str(tmp_path / "cli")]) == 2
    assert "did you mean 'pai'" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()  # refused before any model work


def captured_figures(monkeypatch):
    from vasink.analysis import figures

    seen = []
    original = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, **kw: seen.append(fig) or original(fig, path, **kw))
    return seen


def test_attention_figure_and_head_maps_show_each_method_next_to_vars(llava, tmp_path, monkeypatch):
    model, processor = llava
    seen = captured_figures(monkeypatch)
    question = "what is in the image ?"
    path = analyze_attention(model, processor, image(), question, CONFIG, tmp_path / "attn", layers=[1, 2],
                             methods=("var", "pai", "vaf"), echo=lambda s: None)
    records = json.loads((tmp_path / "attn" / "numbers.json").read_text())["maps"]
    assert [sorted(r["methods"]) for r in records] == [["PAI", "VAF", "VAR"]] * 2
    vaf_layer = vasink.VAFConfig().modified_layers(5)
    assert vaf_layer == (1,)
    assert records[0]["methods"]["VAF"]["visual_mass"] != records[0]["visual_mass_before"]  # VAF's layer
    assert records[1]["methods"]["PAI"]["visual_mass"] != records[1]["visual_mass_before"]
    titles = [ax.get_title() for ax in seen[0].axes]
    for label in ("methods off", "VAR on", "PAI on", "VAF on"):
        assert sum(t.startswith(label) for t in titles) == 2, titles
    assert "data:image/png;base64," in path.read_text()

    samples = [AnalysisSample(id="s0", image=image(0), prompt=question, target="w30",
                              score=lambda a: True, max_new_tokens=1)]
    analyze_heads(model, processor, samples, CONFIG, tmp_path / "heads", methods="var,pai,vaf", echo=lambda s: None)
    numbers = json.loads((tmp_path / "heads" / "numbers.json").read_text())
    own = {label: np.array(numbers["methods"][label]["own"], dtype=float) for label in ("VAR", "PAI", "VAF")}
    assert np.abs(own["VAF"]).max(-1).nonzero()[0].tolist() == [1]  # VAF's layer alone
    assert set(np.abs(own["PAI"]).max(-1).nonzero()[0].tolist()) <= set(vasink.PAIConfig().modified_layers(5))
    assert numbers["methods"]["VAF"]["modified_layers"] == [1]
    change_figure = seen[-1]
    panels = [ax for ax in change_figure.axes if ax.get_title()]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["VAR", "PAI", "VAF"]
    vaf_ticks = [t.get_text() for t in panels[2].get_yticklabels()]
    assert vaf_ticks == ["0*", "1", "2*", "3*", "4*"]
    assert (tmp_path / "heads" / "heads_methods.png").exists()
