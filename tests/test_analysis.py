"""Analysis on tiny random LLaVA models with planted sinks: sink maps, masking, heads, residual, report, errors."""

import json
import re

import numpy as np
import pytest
import torch
from conftest import SINK_DIMS, SinkPlanter, tiny_llava, tiny_processor
from PIL import Image

import vasink
from vasink import VARConfig
from vasink.analysis import ablations, capture_forward, image_grids
from vasink.analysis.heads import HeadMap
from vasink.analysis.residual import ResidualTable, contribution_norms, token_classes
from vasink.analysis.runs import analyze_ablations, analyze_attention, analyze_heads, analyze_sinks
from vasink.analysis.samples import AnalysisSample, build_inputs
from vasink.analysis.sink_figures import sink_grid
from vasink.state import LayerPlan

CONFIG = VARConfig(tau=4.0, rho=0.5, p=0.6, min_visual_attention=0.2, sink_dims=SINK_DIMS)
PLANTED = (2, 9)  # image-token ordinals the planter makes massive: cells (0, 2) and (2, 1) of the 4x4 grid


def image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(one_thread):
    model = tiny_llava(attn_implementation="sdpa")
    planter = SinkPlanter(model, patches=PLANTED)
    processor = tiny_processor()
    yield model, processor
    planter.remove()


def inputs_for(processor, question="what is in the image ?", seed=0):
    return build_inputs(processor, image(seed), question)


def test_sink_map_marks_exactly_the_planted_patches(setup):
    model, processor = setup
    inputs = inputs_for(processor)
    capture = capture_forward(model, inputs, CONFIG)
    grid = image_grids(model, inputs["input_ids"])[0][0]
    expected = torch.zeros(4, 4, dtype=torch.bool)
    for ordinal in PLANTED:
        expected[ordinal // 4, ordinal % 4] = True
    for layer in range(capture.num_layers):
        want = expected if layer >= 2 else torch.zeros_like(expected)
        assert torch.equal(sink_grid(capture, grid, layer), want), layer
    assert capture.text_sinks(2).nonzero().flatten().tolist() == [0]  # BOS
    # the same sinks as the core's detection
    report = vasink.detect_sinks(model, inputs, CONFIG)
    assert torch.equal(capture.sinks[2], report[2].sink_mask[0])


def test_sink_analysis_is_one_forward_and_its_report_is_self_contained(setup, tmp_path):
    model, processor = setup
    calls = []
    hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        path = analyze_sinks(model, processor, image(), "what is in the image ?", CONFIG, tmp_path, echo=lambda s: None)
    finally:
        hook.remove()
    assert len(calls) == 1
    html = path.read_text()
    pngs = sorted(tmp_path.glob("*.png"))
    assert {p.name for p in pngs} == {"phi_strip.png", "sink_dimensions.png", "visual_sinks.png"}
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)
    assert html.count("src='data:image/png;base64,") == len(pngs)
    import base64

    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode() in html
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    assert numbers["layers"][2]["visual_sink_cells"] == [[0, 2], [2, 1]]
    assert numbers["config"]["tau"] == 4.0


def test_mask_attention_removes_exactly_the_masked_weights():
    torch.manual_seed(0)
    weights = torch.softmax(torch.randn(2, 3, 5, 7), -1)
    keys = torch.zeros(2, 7, dtype=torch.bool)
    keys[0, [1, 4]] = True
    keys[1, 6] = True
    queries = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out = ablations.mask_attention(weights, keys, queries)
    for b in range(2):
        for q in range(5):
            for h in range(3):
                row, new = weights[b, h, q], out[b, h, q]
                if queries[b, q]:
                    kept = torch.where(keys[b], 0.0, row)
                    torch.testing.assert_close(new, kept / kept.sum())
                else:
                    assert torch.equal(new, row)
    all_masked = ablations.mask_attention(weights, torch.ones(2, 7, dtype=torch.bool), queries)
    assert torch.equal(all_masked, weights)  # nothing left to renormalize: the row is untouched, never NaN


def test_masking_visual_sinks_on_the_model(setup):
    model, processor = setup
    inputs = inputs_for(processor)
    stock = capture_forward(model, inputs, CONFIG)
    masked = capture_forward(model, inputs, CONFIG, intervention=ablations.mask_visual_sinks())
    rows = stock.eligible_rows()
    sinks = stock.visual_sinks(2)
    before, after = stock.weights[2][:, rows], masked.weights[2][:, rows]  # layer 2: stock inputs
    assert after[..., sinks].abs().max() == 0
    kept = torch.where(sinks, 0.0, before)
    torch.testing.assert_close(after, kept / kept.sum(-1, keepdim=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked.weights[1], stock.weights[1], rtol=0, atol=0)  # layer 1 untouched


def plan_for(visual, sinks, eligible):
    return LayerPlan(visual_keys=visual, sink_keys=sinks, eligible_queries=eligible)


def test_random_mask_matches_the_sink_count_and_is_fixed_per_image():
    visual = torch.zeros(2, 30, dtype=torch.bool)
    visual[:, 5:21] = True
    sinks_a = torch.zeros_like(visual)
    sinks_a[0, [7, 14]] = True
    sinks_a[1, [0, 9, 12, 20]] = True  # BOS + three visual sinks
    orders = [torch.randperm(16, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    chosen = ablations.random_visual_keys(visual, sinks_a, orders)
    assert chosen.sum(-1).tolist() == [2, 3]
    assert not (chosen & sinks_a).any() and not (chosen & ~visual).any()
    assert torch.equal(chosen, ablations.random_visual_keys(visual, sinks_a, orders))
    sinks_b = sinks_a.clone()
    sinks_b[0, 18] = True  # a layer with one more sink: the mask grows by one, keeping the others
    grown = ablations.random_visual_keys(visual, sinks_b, orders)
    assert grown.sum(-1).tolist() == [3, 3]
    assert not (chosen[0] & ~grown[0] & ~sinks_b[0]).any()

    weights = torch.softmax(torch.randn(2, 2, 30, 30), -1)
    eligible = torch.zeros(2, 30, dtype=torch.bool)
    eligible[:, 21:] = True
    rule_one, rule_two = ablations.mask_random_visual(0, ["a", "b"]), ablations.mask_random_visual(1, ["a", "b"])
    plan = plan_for(visual, sinks_a, eligible)
    zeroed_one = rule_one(weights, plan, CONFIG, 2)[:, 0, 25] == 0
    zeroed_two = rule_two(weights, plan, CONFIG, 2)[:, 0, 25] == 0
    assert zeroed_one.sum(-1).tolist() == [2, 3]
    assert torch.equal(zeroed_one, rule_one(weights, plan, CONFIG, 3)[:, 0, 25] == 0)  # same set every layer
    assert not torch.equal(zeroed_one, zeroed_two)  # another seed, another set


def test_budget_rules():
    torch.manual_seed(1)
    weights = torch.softmax(3 * torch.randn(1, 4, 12, 12), -1)
    visual = torch.zeros(1, 12, dtype=torch.bool)
    visual[0, 2:8] = True
    sinks = torch.zeros_like(visual)
    sinks[0, [0, 3]] = True
    eligible = torch.zeros(1, 12, dtype=torch.bool)
    eligible[0, 8:] = True
    plan = plan_for(visual, sinks, eligible)
    config = CONFIG.replace(rho=0.0, min_visual_attention=0.0)
    from vasink.attention import var_rule

    torch.testing.assert_close(ablations.redistribute_budget(weights, plan, config, "visual"),
                               var_rule(weights, plan, config))
    for receivers, receiving in (("text", ~visual & ~sinks), ("all", ~sinks)):
        out = ablations.redistribute_budget(weights, plan, config, receivers)
        torch.testing.assert_close(out.sum(-1), torch.ones(1, 4, 12))
        rows = out[0, :, 8:]
        torch.testing.assert_close(rows[..., sinks[0]], 0.4 * weights[0, :, 8:][..., sinks[0]])
        untouched = ~receiving[0] & ~sinks[0]
        torch.testing.assert_close(rows[..., untouched], weights[0, :, 8:][..., untouched])
        assert torch.equal(out[0, :, :8], weights[0, :, :8])
    all_heads = ablations.var_all_heads()(weights, plan, CONFIG, 2)
    torch.testing.assert_close(all_heads, var_rule(weights, plan, config))


def test_heads_map_against_a_direct_computation(setup):
    model, processor = setup
    captures = [capture_forward(model, inputs_for(processor, q, seed), CONFIG)
                for seed, q in enumerate(["what is in the image ?", "is there a person in the picture ?"])]
    accumulator = HeadMap(captures[0].num_layers, captures[0].num_heads, CONFIG.min_visual_attention)
    for capture in captures:
        accumulator.add(capture)
    result = accumulator.result()
    layers, heads = captures[0].num_layers, captures[0].num_heads
    assert result["visual_mass"].shape == (layers, heads) and result["nonsink_ratio"].shape == (layers, heads)
    assert set(result["selected"]) == {"general", "hallucination", "vision-centric"}
    mass, ratio, ratio_rows, rows = np.zeros((layers, heads)), np.zeros((layers, heads)), np.zeros((layers, heads)), 0
    selected = {name: np.zeros((layers, heads)) for name in result["selected"]}
    for capture in captures:
        ids = capture.input_ids.tolist()
        visual = [j for j, t in enumerate(ids) if t == 99]
        for position in [i for i in range(len(ids)) if i > visual[0] and ids[i] != 99]:
            rows += 1
            row = capture.query_positions.tolist().index(position)
            for layer in range(layers):
                sink_cols = [j for j in visual if capture.phi[layer, j] > CONFIG.tau and layer >= 2]
                for head in range(heads):
                    w = capture.weights[layer, head, row].double()
                    m_v, m_sv = float(w[visual].sum()), float(w[sink_cols].sum())
                    mass[layer, head] += m_v
                    r = (m_v - m_sv) / m_v
                    ratio[layer, head] += r
                    ratio_rows[layer, head] += 1
                    for name, rho in result["rho"].items():
                        selected[name][layer, head] += m_v >= CONFIG.min_visual_attention and r >= rho
    assert result["rows"] == rows
    np.testing.assert_allclose(result["visual_mass"], mass / rows, rtol=1e-5)
    np.testing.assert_allclose(result["nonsink_ratio"], ratio / ratio_rows, rtol=1e-5)
    for name in selected:
        np.testing.assert_allclose(result["selected"][name], selected[name] / rows)
    assert result["prompts_with_visual_sink"].tolist() == [0, 0, 1, 1, 1]


def test_residual_contribution_against_a_direct_computation(setup):
    model, processor = setup
    inputs = inputs_for(processor)
    normed = {}
    layer = 3
    attn = model.model.language_model.layers[layer].self_attn
    hook = attn.v_proj.register_forward_hook(lambda m, args, out: normed.__setitem__("x", args[0][0].detach()))
    try:
        capture = capture_forward(model, inputs, CONFIG, values=True)
    finally:
        hook.remove()
    contribution, attention = contribution_norms(capture, layer)
    x = normed["x"]  # (T, D): the normalized input v_proj saw
    heads, head_dim = 4, attn.head_dim
    v = attn.v_proj(x).reshape(len(x), -1, head_dim)  # (T, Hkv, hd)
    rows = capture.eligible_rows()
    for e, row in enumerate(rows.tolist()[:3]):
        for j in (0, 5, int(capture.query_positions[row])):
            c = sum(capture.weights[layer, h, row, j] * attn.o_proj.weight[:, h * head_dim:(h + 1) * head_dim]
                    @ v[j, h // (heads // v.shape[1])] for h in range(heads))
            torch.testing.assert_close(contribution[e, j], c.norm(), rtol=1e-4, atol=1e-6)
    classes = token_classes(capture, layer)
    assert sum(int(m.sum()) for m in classes.values()) == len(capture.input_ids)
    assert classes["visual sink"].sum() == 2 and classes["BOS"][0]
    table = ResidualTable(capture.num_layers)
    table.add(capture)
    result = table.result()
    assert result["attention"].shape == (capture.num_layers, 4)
    assert np.isnan(result["contribution"][1, 1])  # no visual sink in layer 1


def samples_for_ablation():
    return [AnalysisSample(id=f"s{i}", image=image(i), prompt=q, target="w30", score=lambda a: a.startswith("w30"),
                           max_new_tokens=2)
            for i, q in enumerate(["what is in the image ?", "is there a person ?"])]


def test_ablations_heads_and_attention_end_to_end(setup, tmp_path):
    model, processor = setup
    path = analyze_ablations(model, processor, samples_for_ablation(), CONFIG, tmp_path / "ablate", seeds=(0, 1),
                             echo=lambda s: None)
    numbers = json.loads((tmp_path / "ablate" / "numbers.json").read_text())
    summary = numbers["summary"]
    for key in ("mask-visual-sinks", "mask-random-visual/seed0", "mask-random-visual/seed1", "mask-random-visual/mean",
                "var-all-heads", "budget-text", "budget-visual", "budget-all"):
        assert summary[key]["n"] == 2 and len(summary[key]["ci95"]) == 2, key
    assert all(r["visual_sink_layers"] == [2, 3] for r in numbers["records"])
    assert "residual.png" in path.read_text()

    heads = analyze_heads(model, processor, samples_for_ablation(), CONFIG, tmp_path / "heads", echo=lambda s: None)
    assert "heads.png" in heads.read_text()
    attention = analyze_attention(model, processor, image(), "what is in the image ?", CONFIG, tmp_path / "attn",
                                  layers=[2, 3], heads=[0, 3], queries=(-1, -2), echo=lambda s: None)
    maps = json.loads((tmp_path / "attn" / "numbers.json").read_text())["maps"]
    assert len(maps) == 2 * 2 * 2
    assert any(m["methods"]["VAR"]["visual_sink_mass"] < m["visual_sink_mass_before"] for m in maps)
    assert attention.read_text().count("data:image/png;base64,") == 2

    from vasink.analysis.findings import write_findings

    analyze_sinks(model, processor, image(), "what is in the image ?", CONFIG, tmp_path / "sinks", echo=lambda s: None)
    findings = write_findings(tmp_path).read_text()
    assert "visual sinks per layer (2..): [2, 2, 2] of 16 image tokens" in findings
    assert findings.count("**holds**") + findings.count("**does not hold**") >= 8
    assert_verdicts_follow_the_numbers(findings, tmp_path)


def verdict(findings: str, claim: str) -> bool:
    """The verdict FINDINGS.md states for the finding that starts with ``claim``: True holds, False does not."""
    lines = [line for line in findings.splitlines() if line.startswith(f"- {claim}")]
    assert len(lines) == 1, claim
    found = re.search(r"\*\*(holds|does not hold)\*\*", lines[0])
    assert found, lines[0]
    return found.group(1) == "holds"


def assert_verdicts_follow_the_numbers(findings: str, folder):
    """Each verdict is the one its stated rule gives on the numbers.json files, and the findings that the
    planted model makes true by construction hold."""
    sinks = json.loads((folder / "sinks" / "numbers.json").read_text())
    heads = json.loads((folder / "heads" / "numbers.json").read_text())
    summary = json.loads((folder / "ablate" / "numbers.json").read_text())["summary"]
    residual = json.loads((folder / "ablate" / "numbers.json").read_text())["residual"]
    layers = [e for e in sinks["layers"] if e["layer"] >= 2]
    tau = sinks["config"]["tau"]
    assert verdict(findings, "Massive activation on BOS") is True  # planted
    assert all(e["bos_phi"] > tau and e["bos_phi"] > 2 * e["median_phi"] for e in layers)
    assert verdict(findings, "Some image tokens carry the same massive activation") is True  # planted
    ratios = [e["attention"]["per_visual_sink"] / e["attention"]["per_visual_nonsink"] for e in layers]
    assert verdict(findings, "Visual sinks draw more attention") == (min(ratios) > 1)
    mass = np.array(heads["heads"]["visual_mass"], dtype=float)[heads["modified_layers"]]
    assert verdict(findings, "Only some heads look at the image") == (np.nanmax(mass) - np.nanmin(mass) > 0.2)
    assert verdict(findings, "Masking text-to-visual-sink") == (summary["mask-visual-sinks"]["ci95"][0] > -0.02)
    assert verdict(findings, "Masking as many random") == (summary["mask-random-visual/mean"]["ci95"][1] < 0)
    assert verdict(findings, "VAR on all heads") == (summary["var-all-heads"]["ci95"][1] < 0)
    assert verdict(findings, "Giving the budget to text tokens") == (summary["budget-text"]["ci95"][1] < 0)
    classes = residual["classes"]
    per_attention = np.array([[np.nan if v is None else v for v in row]
                              for row in residual["contribution_per_attention"]], dtype=float)
    written = per_attention[:, classes.index("visual sink")]
    visual_layers = [layer for layer in range(len(written)) if np.isfinite(written[layer])
                     and layer in json.loads((folder / "ablate" / "numbers.json").read_text())["modified_layers"]]
    assert visual_layers, "the planted visual sinks are in the layers VAR may modify"
    little = np.all(written[visual_layers] < per_attention[visual_layers, classes.index("visual non-sink")])
    assert verdict(findings, "Visual sinks, like BOS, write little") == bool(little)


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": [9]}, r"--layers \[9\] out of range: the model has 5 decoder layers \(0\.\.4\)"),
    ({"heads": [4]}, r"--heads \[4\] out of range: the model has 4 attention heads \(0\.\.3\)"),
    ({"queries": (5,)}, r"query token 5 is not a text token.*image tokens at 3\.\.18.*-1"),
])
def test_bad_layer_head_or_query_is_a_clear_error(setup, tmp_path, kwargs, message):
    model, processor = setup
    with pytest.raises(ValueError, match=message):
        analyze_attention(model, processor, image(), "what is in the image ?", CONFIG, tmp_path, **kwargs)


def test_cli_missing_image_and_unknown_bench(tmp_path, capsys):
    from vasink.cli import main

    assert main(["sinks", "--image", str(tmp_path / "nope.png"), "--question", "x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and "not found" in err and "--image" in err
    assert main(["heads", "--bench", "organism-popee", "--out", str(tmp_path)]) == 2
    assert "organism-pope" in capsys.readouterr().err
    assert main(["attention", "--layers", "two"]) == 2
    assert "--layers" in capsys.readouterr().err


def test_ablations_reuse_base_answers_from_eval_records(setup, tmp_path):
    from vasink.eval.registry import prompt_hash

    model, processor = setup
    samples = samples_for_ablation()
    records = tmp_path / "eval"
    records.mkdir()
    run = {"run": {"model": "organism", "max_new_tokens": samples[0].max_new_tokens},
           "arms": {"base": {"config": None, "config_hash": "current"}}}
    (records / "run.json").write_text(json.dumps(run))
    lines = [json.dumps({"id": s.id, "arm": "base", "raw": raw, "prompt_hash": prompt_hash(s.prompt),
                         "config_hash": config_hash}) for s in samples[:2]
             for raw, config_hash in (("w30 stale", "old"), ("w30 reused", "current"))][:3]  # sample 1: stale only
    (records / "records.jsonl").write_text("\n".join(lines) + '\n{"id": "cut off by a kill')
    with pytest.raises(ValueError, match="answers of model 'organism', not 'another'"):
        analyze_ablations(model, processor, samples, CONFIG, tmp_path / "x", names=("mask-visual-sinks",),
                          seeds=(0,), base_records=records, model_name="another", echo=lambda s: None)
    analyze_ablations(model, processor, samples, CONFIG, tmp_path / "out", names=("mask-visual-sinks",), seeds=(0,),
                      base_records=records, model_name="organism", echo=lambda s: None)
    answers = [r["answers"]["base"] for r in json.loads((tmp_path / "out" / "numbers.json").read_text())["records"]]
    assert answers[0] == "w30 reused" and not answers[1].startswith("w30")  # a stale config's answer is not reused
    for change, message in (({"decoding": {"sample": True}}, "its base arm sampled its answers"),
                            ({"max_new_tokens": 99}, "cut its answers at 99 new tokens")):
        other = json.loads(json.dumps(run))
        (other["arms"]["base"] if "decoding" in change else other["run"]).update(change)
        (records / "run.json").write_text(json.dumps(other))
        with pytest.raises(ValueError, match=message):
            analyze_ablations(model, processor, samples, CONFIG, tmp_path / "y", names=("mask-visual-sinks",),
                              seeds=(0,), base_records=records, model_name="organism", echo=lambda s: None)


def test_ablation_findings_cover_only_the_conditions_that_ran():
    from vasink.analysis.findings import ablation_findings

    def entry(accuracy, low, high):
        return {"accuracy": accuracy, "delta": accuracy - 0.6, "ci95": [low, high], "n": 10}

    summary = {"base": entry(0.6, 0, 0), "mask-visual-sinks": entry(0.6, -0.01, 0.01)}
    records = [{"visual_sink_layers": [2]}]
    lines = ablation_findings({"summary": summary, "records": records, "modified_layers": [2],
                               "residual": {"classes": ["BOS", "text", "visual sink", "visual non-sink"],
                                            "contribution_per_attention": [[1.0, 2.0, 0.5, 2.0]] * 3}})
    assert lines[0].startswith("Base accuracy 0.600 on 10 samples (1 with a visual sink")
    assert any("leaves accuracy about unchanged" in line for line in lines)
    assert not any("random image tokens" in line or "all heads" in line for line in lines)


def captured_figures(monkeypatch):
    """The matplotlib figures the analysis saves (save_figure closes them; the objects stay readable)."""
    from vasink.analysis import figures

    seen = []
    original = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, **kw: seen.append(fig) or original(fig, path, **kw))
    return seen


def test_demo_attention_maps_have_a_colour_bar_and_say_what_they_average(tmp_path, monkeypatch):
    from vasink.analysis import figures

    seen = captured_figures(monkeypatch)
    sinks = torch.zeros(4, 4, dtype=torch.bool)
    sinks[1, 2] = True
    before, after = torch.rand(4, 4) / 16, torch.rand(4, 4) / 16
    figures.attention_comparison_figure(image(), sinks, before, after, "q", tmp_path / "a.png")
    figures.attention_comparison_figure(image(), sinks, before, after, "q", tmp_path / "b.png", layers=[3, 4],
                                        heads=[1], after_label="VAR, all layers")
    default, chosen = seen
    assert default.axes[2].get_title().startswith("attention, VAR on (")
    assert chosen.axes[2].get_title().startswith("attention, VAR, all layers (")  # the demo's variant, named
    assert len(default.axes) == 4 and "attention weight" in default.axes[3].get_ylabel()  # the colour bar
    assert "mean over layers 2 to last and all heads" in default._suptitle.get_text()
    assert "mean over layers 3, 4 and head 1" in chosen._suptitle.get_text()


def test_heads_figure_hatches_the_layers_var_never_modifies(tmp_path, monkeypatch):
    from vasink.analysis import heads

    seen = captured_figures(monkeypatch)
    num_layers, num_heads = 5, 3
    high = np.ones((num_layers, num_heads))
    result = {"visual_mass": high, "nonsink_ratio": high, "selected": {"general": high}, "rho": {"general": 0.8},
              "prompts": 1, "rows": 4}
    heads.heads_figure(result, (2, 3), tmp_path / "heads.png")
    ax = seen[0].axes[0]
    hatched = [patch for patch in ax.patches if patch.get_hatch()]
    assert len(hatched) == 3  # layers 0, 1 and 4
    assert all(patch.get_facecolor()[3] == 0 for patch in ax.patches)  # no pale fill to mistake for high values
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0*", "1*", "2", "3", "4*"]


# -- figures a person can read (issue 22) ---------------------------------------------------------------------


def _extents(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # save_figure closed the figure: draw it again to measure
    canvas.draw()
    return canvas.get_renderer()


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_attention_maps_of_many_layers_are_split_into_figures_of_a_sane_size(tmp_path, monkeypatch):
    from vasink.analysis import figures

    seen = captured_figures(monkeypatch)
    sinks = torch.zeros(4, 4, dtype=torch.bool)
    panels = [(f"layer {layer}, mean of heads", sinks, torch.rand(4, 4), torch.rand(4, 4)) for layer in range(2, 30)]
    written = figures.attention_figures(image(), panels, "query token 81 '\\n' of 'q'", tmp_path / "attention_query81.png")
    assert [p.name for p in written] == [f"attention_query81_part{k}.png" for k in range(1, 6)]
    for path in written:
        with Image.open(path) as png:
            assert png.height <= 1600 and png.width <= 1000, png.size
    assert seen[0]._suptitle.get_text().endswith("(part 1 of 5)")
    one = figures.attention_figures(image(), panels[:2], "t", tmp_path / "attention_query5.png")
    assert [p.name for p in one] == ["attention_query5.png"]


def test_a_figure_title_is_not_drawn_over_the_panels(tmp_path, monkeypatch):
    from vasink.analysis import figures, heads

    seen = captured_figures(monkeypatch)
    sinks = torch.zeros(4, 4, dtype=torch.bool)
    figures.attention_figures(image(), [("layer 2", sinks, torch.rand(4, 4), torch.rand(4, 4))],
                              "query token 81 of a long question", tmp_path / "a.png")
    high = np.ones((5, 3))
    heads.heads_figure({"visual_mass": high, "nonsink_ratio": high, "selected": {"general": high},
                        "rho": {"general": 0.8}, "prompts": 1, "rows": 4,
                        "prompts_with_visual_sink": np.array([0, 0, 0, 1, 0])}, (2, 3, 4), tmp_path / "h.png")
    for fig in seen:
        renderer = _extents(fig)
        title = fig._suptitle.get_window_extent(renderer)
        for ax in fig.axes:
            assert not _overlaps(title, ax.get_window_extent(renderer)), ax.get_title()
            if ax.get_title():
                assert not _overlaps(title, ax.title.get_window_extent(renderer)), ax.get_title()


def test_tokens_are_labelled_as_text_not_as_byte_level_bpe_markers():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vasink.analysis.figures import readable_tokens

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(["the cat sat\non the mat\n"] * 20, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    ids = tokenizer("the cat\non")["input_ids"]
    assert any(t in ("Ċ", "ĠĊ") or t.startswith("Ġ") for t in tokenizer.convert_ids_to_tokens(ids))  # the markers
    shown = readable_tokens(tokenizer, ids)
    assert not any(marker in "".join(shown) for marker in ("Ċ", "Ġ"))
    assert "\\n" in shown and "\u2423cat" in shown, shown


def test_sentencepiece_tokens_keep_their_leading_space_in_labels():
    """A SentencePiece decoder drops a word's space when one token is decoded alone ("\u2581cat" -> "cat"): the
    label puts it back, as the byte-level case shows it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vasink.analysis.figures import readable_tokens

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    backend.train_from_iterator(["the cat sat on the mat"] * 20, trainers.BpeTrainer(
        vocab_size=60, special_tokens=["<unk>"], show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    ids = tokenizer("the cat sat")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["\u2581the", "\u2581cat", "\u2581sat"]
    assert tokenizer.decode(ids[1:2]) == "cat"  # the dropped space this guards against
    assert readable_tokens(tokenizer, ids) == ["\u2423the", "\u2423cat", "\u2423sat"]


def fake_capture(num_layers=30, hidden=64, length=12):
    from types import SimpleNamespace

    generator = torch.Generator().manual_seed(0)
    first = torch.rand(num_layers, hidden, generator=generator)
    first[:, SINK_DIMS[0]] = 40.0
    return SimpleNamespace(first_token_ratio=first, median_token_ratio=torch.rand(num_layers, hidden, generator=generator),
                           phi=torch.rand(num_layers, length, generator=generator) * 10, first_token=0,
                           sink_dims=SINK_DIMS)


def _tick_labels_apart(ax, renderer) -> None:
    labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    assert len(labels) <= 12
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:])), "tick labels run together"


def test_layer_axes_of_many_layers_are_readable_and_legends_hide_no_data(tmp_path, monkeypatch):
    from vasink.analysis.residual import residual_figure
    from vasink.analysis.sink_figures import sink_dimension_figure

    seen = captured_figures(monkeypatch)
    sink_dimension_figure(fake_capture(), tmp_path / "sink_dimensions.png")
    layers = 30
    values = np.random.default_rng(0).random((layers, 3)) + 0.1
    residual_figure({"classes": ["BOS", "visual", "text"], "attention": values, "value_norm": values,
                     "contribution": values, "contribution_per_attention": values}, tmp_path / "residual.png")
    for fig in seen:
        renderer = _extents(fig)
        plots = [ax for ax in fig.axes if ax.get_xlabel() in ("layer", "layer (input)")]
        assert plots
        for ax in plots:
            _tick_labels_apart(ax, renderer)
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                box = legend.get_window_extent(renderer)
                assert not any(_overlaps(box, other.get_window_extent(renderer)) for other in plots)


def test_heads_figure_says_where_var_changes_nothing_because_no_prompt_had_a_visual_sink(tmp_path, monkeypatch):
    from vasink.analysis import heads

    seen = captured_figures(monkeypatch)
    high = np.ones((5, 3))
    result = {"visual_mass": high, "nonsink_ratio": high, "selected": {"general": high}, "rho": {"general": 0.8},
              "prompts": 2, "rows": 4, "prompts_with_visual_sink": np.array([0, 0, 2, 0, 1])}
    heads.heads_figure(result, (2, 3, 4), tmp_path / "heads.png")
    ax = seen[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0*", "1*", "2", "3\u2020", "4"]
    assert len([p for p in ax.patches if p.get_hatch()]) == 3
    assert "VAR changed nothing" in seen[0]._suptitle.get_text()
    heads.heads_figure(result, (2, 3, 4), tmp_path / "all.png", skips_layers_without_visual_sink=False)
    assert [t.get_text() for t in seen[1].axes[0].get_yticklabels()] == ["0*", "1*", "2", "3", "4"]


def test_a_report_into_an_earlier_runs_folder_removes_the_figures_it_did_not_draw(tmp_path):
    """A second run into the same --out replaces the report: the earlier run's figures this one did not draw go
    (they would pass for this run's), the ones it drew again stay, and other files are left alone."""
    from vasink.analysis.report import Section, write_report

    for name in ("heads.png", "heads_methods.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"\x89PNG")
    write_report(tmp_path, "first", [Section("a", figures=[tmp_path / "heads.png", tmp_path / "heads_methods.png"])],
                 {"prompts": 2}, {})
    assert json.loads((tmp_path / "numbers.json").read_text())["figures"] == ["heads.png", "heads_methods.png"]
    write_report(tmp_path, "second", [Section("a", figures=[tmp_path / "heads.png"])], {"prompts": 1}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads.png", "notes.txt", "numbers.json", "report.html"]
    assert json.loads((tmp_path / "numbers.json").read_text())["prompts"] == 1
