"""Arms of the eval: parsing, decodings, the seeded sampler, a fake method through eval / resume / shards /
sweep / report, the report's corrections, and the peers (PAI, VAF, VCD) end to end on tiny families."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
from conftest import SINK_DIMS, tiny_llava, tiny_processor  # noqa: E402

from vasink import VARConfig  # noqa: E402
from vasink.cli import main  # noqa: E402
from vasink.eval import arms as armsmod  # noqa: E402
from vasink.eval import loading, runner  # noqa: E402
from vasink.eval.records import ConfigMismatch, read_records  # noqa: E402
from vasink.eval.report import build_report  # noqa: E402
from vasink.eval.runner import EvalSettings, run_eval  # noqa: E402
from vasink.eval.stats import holm  # noqa: E402
from vasink.eval.sweep import run_sweep  # noqa: E402

BOOST_WORD = "w30"  # tiny_processor's word for token 30


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def loaded():
    return loading.LoadedModel(tiny_llava(num_layers=3), tiny_processor(), "tiny-llava",
                               VARConfig(sink_dims=SINK_DIMS, tau=3.0))


@pytest.fixture
def use_tiny(monkeypatch, loaded):
    monkeypatch.setattr(loading, "load_model", lambda spec="organism", device=None, dtype=None: loaded)


@dataclasses.dataclass(frozen=True)
class BoostConfig:
    """A fake method: adds ``strength`` to token ``token``'s logit at every step."""

    token: int = 30
    strength: float = 100.0


class Boost(armsmod.Method):
    about = "test method"
    config_class = "BoostConfig"

    def config_type(self):
        return BoostConfig

    def switched_on(self, model, config, run=0, sample_ids=()):
        import contextlib

        @contextlib.contextmanager
        def hooked():
            def add(module, args, output):
                output.logits[..., config.token] += config.strength
            handle = model.register_forward_hook(add)
            try:
                yield
            finally:
                handle.remove()
        return hooked()


@pytest.fixture
def boost(monkeypatch):
    method = Boost()
    method.name = "boost"
    monkeypatch.setitem(armsmod._METHODS, "boost", method)
    return method


def settings(out, **kw):
    return EvalSettings(**{"bench": "organism-pope", "limit": 2, "batch_size": 4, "out": str(out), "progress": False,
                           **kw})


def raw_answers(out) -> dict:
    return {(r["id"], r["arm"], r.get("run", 0)): r["raw"] for r in read_records(out)}


# -- parsing and decodings ------------------------------------------------------------------------------------


def test_arm_names_settings_and_decodings_parse_with_errors_that_name_the_fix():
    assert armsmod.parse_arms("base, var,pai,vaf,vcd") == ("base", "var", "pai", "vaf", "vcd")
    with pytest.raises(ValueError, match="unknown arm 'vra'; did you mean 'var'"):
        armsmod.parse_arms("base,vra")
    with pytest.raises(ValueError, match="named twice"):
        armsmod.parse_arms("var,var")
    assert armsmod.parse_sets(["pai.alpha=0.5", "vaf.layers=1,2", "vcd.seed=none", "pai.gamma=2"]) == \
        {"pai": {"alpha": 0.5, "gamma": 2}, "vaf": {"layers": (1, 2)}, "vcd": {"seed": None}}
    with pytest.raises(ValueError, match="ARM.FIELD=VALUE"):
        armsmod.parse_sets(["alpha=0.5"])
    vcd, var = armsmod.get_method("vcd"), armsmod.get_method("var")
    assert armsmod.decoding_for(vcd, "greedy") == armsmod.GREEDY  # one shared decoding by default
    official = armsmod.decoding_for(vcd, "official", seed=55, runs=3)
    assert official.sample and (official.temperature, official.top_p, official.top_k) == (1.0, 1.0, 0)
    assert (official.seed, official.runs) == (55, 3)
    assert armsmod.decoding_for(var, "official", seed=55, runs=3) == armsmod.GREEDY
    assert armsmod.decoding_for(var, "sample", seed=7).sample
    with pytest.raises(ValueError, match="--runs must be at least 1"):
        armsmod.Decoding(sample=True, runs=0)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04: 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped
    assert holm([0.2]) == [0.2]


def sampler_draws(decoding, logits, rows=6000):
    sampler = armsmod.SeededSampler(decoding, list(range(rows)))
    out = sampler(None, logits.expand(rows, -1).clone())
    assert torch.isfinite(out).sum(-1).eq(1).all()  # one finite logit per row: greedy takes it
    return np.bincount(out.argmax(-1).numpy(), minlength=logits.shape[-1]) / rows


def test_seeded_sampler_draws_from_the_tempered_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    plain = armsmod.Decoding(sample=True)
    np.testing.assert_allclose(sampler_draws(plain, logits), logits.softmax(-1)[0].numpy(), atol=0.02)
    cold = armsmod.Decoding(sample=True, temperature=0.5)
    np.testing.assert_allclose(sampler_draws(cold, logits), (logits / 0.5).softmax(-1)[0].numpy(), atol=0.02)
    top2 = sampler_draws(armsmod.Decoding(sample=True, top_k=2), logits)
    assert top2[2:].sum() == 0 and top2[0] == pytest.approx(float(torch.tensor([2.0, 1.0]).softmax(-1)[0]), abs=0.02)
    nucleus = sampler_draws(armsmod.Decoding(sample=True, top_p=0.6), logits)  # p = .53 .20 .12 ...: two kept
    assert nucleus[2:].sum() == 0 and nucleus[1] > 0.2
    masked = torch.tensor([[2.0, -torch.inf, 0.5, -torch.inf, -1.0]])  # VCD / PAI cut tokens off: never drawn
    assert sampler_draws(plain, masked)[[1, 3]].sum() == 0


# -- a fake method through the runner -------------------------------------------------------------------------


def test_a_registered_method_runs_as_an_arm_through_resume_shards_and_sweep(tmp_path, loaded, boost):
    whole = tmp_path / "whole"
    summary = run_eval(settings(whole, arms=("base", "var", "boost")), loaded=loaded)
    assert summary["generated"] == 3 * 6
    answers = raw_answers(whole)
    boosted = [a for (i, arm, _), a in answers.items() if arm == "boost"]
    assert boosted and all(a.split() == [BOOST_WORD] * 4 for a in boosted)
    assert all(a != BOOST_WORD for (i, arm, _), a in answers.items() if arm == "base")
    stored = json.loads((whole / "run.json").read_text())["arms"]
    assert stored["boost"]["config"] == {"method": "boost", "token": 30, "strength": 100.0}
    assert stored["var"]["config"]["rho"] == 0.5 and "method" not in stored["var"]["config"]  # as before arms

    killed = tmp_path / "killed"

    def kill(batch_index):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_eval(settings(killed, arms=("base", "var", "boost")), loaded=loaded, after_batch=kill)
    resumed = run_eval(settings(killed, arms=("base", "var", "boost")), loaded=loaded)
    assert resumed["skipped"] == 12 and resumed["generated"] == 6
    assert raw_answers(killed) == answers

    sharded = tmp_path / "sharded"
    for index in range(2):
        run_eval(settings(sharded, arms=("base", "var", "boost"), shard=(index, 2)), loaded=loaded)
    assert raw_answers(sharded) == answers

    with pytest.raises(ConfigMismatch, match=r"arm 'boost' run with another boost config \(differs in strength"):
        run_eval(settings(whole, arms=("base", "boost"), params={"boost": {"strength": 5.0}}), loaded=loaded)

    swept = run_sweep(settings(whole), loaded=loaded, method="boost", grid={"strength": [0.0, 100.0]})
    run = json.loads((whole / "run.json").read_text())["arms"]
    assert "boost-strength0" in run and "boost-strength100" not in run  # the existing arm is reused
    assert swept["generated"] == 6 and swept["skipped"] == 12  # base and boost reused
    after = raw_answers(whole)
    assert all(after[(i, "boost-strength0", 0)] == after[(i, "base", 0)] for (i, arm, _) in answers if arm == "base")


def test_unknown_or_bad_parameters_fail_before_anything_is_generated(tmp_path, loaded):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="PAIConfig has alpha, gamma, layers, cutoff"):
        run_eval(settings(out, arms=("base", "pai"), params={"pai": {"alpah": 1.0}}), loaded=loaded)
    with pytest.raises(ValueError, match=r"arm 'vaf': VAFConfig.layers \[7\] out of range"):
        run_eval(settings(out, arms=("base", "vaf"), params={"vaf": {"layers": (7,)}}), loaded=loaded)
    with pytest.raises(ValueError, match="no arm 'vcd' in --arms base,pai"):
        run_eval(settings(out, arms=("base", "pai"), params={"vcd": {"alpha": 1.0}}), loaded=loaded)
    assert read_records(out) == []


# -- sampled arms --------------------------------------------------------------------------------------------


def test_sampled_answers_do_not_depend_on_the_batch_and_runs_extend(tmp_path, loaded, boost):
    arms = ("base", "boost")
    params = {"boost": {"strength": 0.0}}  # the same logits as base
    big = tmp_path / "big"
    run_eval(settings(big, arms=arms, params=params, decoding="sample", runs=2, batch_size=4), loaded=loaded)
    small = tmp_path / "small"
    run_eval(settings(small, arms=arms, params=params, decoding="sample", runs=2, batch_size=1), loaded=loaded)
    answers = raw_answers(big)
    assert answers == raw_answers(small) and len(answers) == 6 * 2 * 2
    ids = sorted({i for i, _, _ in answers})
    # the same seeds for every arm: with the same logits, the same tokens
    assert all(answers[(i, "base", k)] == answers[(i, "boost", k)] for i in ids for k in (0, 1))
    # runs draw anew, and another --seed draws other answers
    assert any(answers[(i, "base", 0)] != answers[(i, "base", 1)] for i in ids)
    other = tmp_path / "other"
    run_eval(settings(other, arms=("base",), decoding="sample", seed=1), loaded=loaded)
    assert any(raw_answers(other)[(i, "base", 0)] != answers[(i, "base", 0)] for i in ids)
    # a larger --runs extends the same arms; another --seed is another arm
    more = run_eval(settings(big, arms=arms, params=params, decoding="sample", runs=3), loaded=loaded)
    assert more["generated"] == 6 * 2 and more["skipped"] == 6 * 2 * 2
    with pytest.raises(ConfigMismatch, match="differs in decoding"):
        run_eval(settings(big, arms=arms, params=params, decoding="sample", seed=4, runs=3), loaded=loaded)
    report = build_report(big, resamples=100)
    assert report["metrics"]["base"]["overall"]["runs"] == 3
    assert report["comparisons"]["boost"]["runs"] == [3, 3]
    assert "runs pooled: 3 and 3" in (big / "report.md").read_text()
    assert "seed 0, 3 runs" in (big / "report.md").read_text()


# -- the report --------------------------------------------------------------------------------------------


def test_report_compares_every_arm_with_base_and_pairwise_holm_corrected(tmp_path, loaded, boost, monkeypatch):
    def scripted(loaded_, images, prompts, max_new_tokens, config=None, **kw):
        if isinstance(config, BoostConfig):
            return ["no"] * len(prompts)
        return ["no" if config is not None and "circle" in p else "yes" for p in prompts]
    monkeypatch.setattr(runner, "generate", scripted)
    out = tmp_path / "run"
    run_eval(settings(out, limit=6, arms=("base", "var", "boost")), loaded=loaded)
    report = build_report(out, resamples=400)
    assert sorted(report["comparisons"]) == ["boost", "var"] and sorted(report["pairwise"]) == ["var vs boost"]
    assert report["correction"] == {"comparisons": 3, "p_values": "holm", "intervals": "bonferroni",
                                    "ci_level": pytest.approx(1 - 0.05 / 3)}
    comparisons = [report["comparisons"]["var"], report["comparisons"]["boost"], report["pairwise"]["var vs boost"]]
    rows = [c["scopes"]["overall"]["metrics"]["accuracy"] for c in comparisons]
    assert [r["mcnemar_p_holm"] for r in rows] == pytest.approx(holm([r["mcnemar_p"] for r in rows]))
    assert any(r["mcnemar_p_holm"] > r["mcnemar_p"] for r in rows)
    for row in rows:  # the Bonferroni interval holds the marginal one
        assert row["ci"][0] <= row["ci95"][0] and row["ci"][1] >= row["ci95"][1]
    assert any(row["ci"] != row["ci95"] for row in rows)
    pair = report["pairwise"]["var vs boost"]["scopes"]["overall"]["metrics"]["accuracy"]
    base_row = report["comparisons"]
    assert pair["delta"] == pytest.approx(base_row["boost"]["scopes"]["overall"]["metrics"]["accuracy"]["delta"]
                                          - base_row["var"]["scopes"]["overall"]["metrics"]["accuracy"]["delta"])
    md = (out / "report.md").read_text()
    assert "## var vs boost" in md and "| Holm p |" in md and "3 comparisons: McNemar p-values are Holm" in md
    assert md.index("arm `base`") < md.index("arm `var`") < md.index("arm `boost`")


# -- the command line and the peers end to end ------------------------------------------------------------


def test_cli_arms_flags(tmp_path, use_tiny, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--bench", "organism-pope", "--arms", "base,vra", "--out", str(out)]) == 2
    assert "did you mean 'var'" in capsys.readouterr().err
    assert main(["eval", "--bench", "organism-pope", "--arms", "base", "--var", "on", "--out", str(out)]) == 2
    assert "pass one" in capsys.readouterr().err
    assert main(["sweep", "--bench", "organism-pope", "--method", "pai", "--out", str(out)]) == 2
    assert "--grid FIELD=V1,V2" in capsys.readouterr().err
    assert not out.exists() or read_records(out) == []


def test_all_peer_arms_from_the_cli_at_official_decodings(tmp_path, use_tiny, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--bench", "organism-pope", "--limit", "1", "--arms", "base,var,pai,vaf,vcd", "--decoding",
                 "official", "--runs", "2", "--set", "pai.alpha=0.5", "--out", str(out), "--resamples", "50"]) == 0
    records = read_records(out)
    assert len(records) == 3 * (4 + 2)
    assert {r.get("run") for r in records if r["arm"] == "vcd"} == {0, 1}
    assert all("run" not in r for r in records if r["arm"] != "vcd")
    run = json.loads((out / "run.json").read_text())
    assert run["run"]["decoding"] == "official"
    assert run["arms"]["vcd"]["decoding"]["sample"] and "decoding" not in run["arms"]["pai"]
    assert run["arms"]["pai"]["config"]["alpha"] == 0.5 and run["arms"]["vcd"]["config"]["seed"] == 0
    md = (out / "report.md").read_text()
    assert "10 comparisons" in md and "## pai vs vcd" in md and "each arm at its method's official decoding" in md
    assert main(["eval", "--bench", "organism-pope", "--limit", "1", "--arms", "base,var,pai,vaf,vcd", "--decoding",
                 "official", "--runs", "2", "--set", "pai.alpha=0.5", "--out", str(out), "--no-report"]) == 0
    assert "0 answers generated, 18 already done" in capsys.readouterr().out


STRONG = {"pai": {"alpha": 3.0, "gamma": 3.0}, "vaf": {"image_scale": 8.0, "system_scale": 0.1},
          "vcd": {"alpha": 3.0, "beta": 0.01}}


@pytest.mark.parametrize("family", ["llava", "llava_next", "idefics3"])  # gemma3: build_inputs passes a flat image list
def test_peer_arms_run_batched_on_tiny_families(tmp_path, family, monkeypatch):
    """Every arm through run_eval on a family's tiny model and processor, left-padded batches of 3: each arm
    writes its answers with its method on: PAI and VAF run the peers' attention in every forward, PAI and VCD
    a second pass after each forward (random tiny weights have near-zero attention logits and weak image
    features, so answers need not change: the calls are what is checked)."""
    from vasink.models import adapter_for

    if family == "llava":
        model, processor = tiny_llava(num_layers=3), tiny_processor()
    else:
        from families_fixtures import FAMILIES, PROCESSORS
        model, processor = FAMILIES[family].build(), PROCESSORS[family]()
    model.generation_config.eos_token_id = None
    loaded = loading.LoadedModel(model, processor, f"tiny-{family}", VARConfig(sink_dims=SINK_DIMS, tau=3.0))
    seen, calls, current = {}, {}, []
    real_generate = runner.generate

    def tracking(loaded_, images, prompts, max_new_tokens, config=None, **kw):
        current[:] = [armsmod.method_of(config)]
        return real_generate(loaded_, images, prompts, max_new_tokens, config, **kw)
    monkeypatch.setattr(runner, "generate", tracking)
    text_config = adapter_for(model).text_config(model)
    def spy(module, args):
        seen.setdefault(current[0], set()).add(text_config._attn_implementation)
        calls[current[0]] = calls.get(current[0], 0) + 1
    hook = model.register_forward_pre_hook(spy)
    out = tmp_path / family
    try:
        run_eval(settings(out, limit=1, batch_size=3, arms=("base", "pai", "vaf", "vcd"), params=STRONG),
                 loaded=loaded)
    finally:
        hook.remove()
    answers = raw_answers(out)
    ids = sorted({i for i, _, _ in answers})
    assert len(answers) == 4 * len(ids) == 12
    assert seen["pai"] == seen["vaf"] == {"vasink-peers"} and seen["base"] == seen["vcd"] == {"sdpa"}
    # PAI's no-image pass is a second forward; VCD's noised rows ride in the main forward (2B rows, docs/peers.md)
    assert calls["pai"] == 2 * calls["base"] and calls["vcd"] == calls["vaf"] == calls["base"] > 0
    assert text_config._attn_implementation == "sdpa"  # the model as loaded after the run


def test_vcd_noise_seed_does_not_depend_on_the_batch(loaded):
    """VCD's noise seed is (--seed, run), the same for every batch; each image's noise then comes from that seed
    and its pixels (tests/test_peers.py: the same prompt alone and in a batch gets the same noise and answer)."""
    from vasink import VCDConfig

    seeds = {}
    for key, run, ids in (("a", 0, ["s1"]), ("b", 0, ["s2", "s1"]), ("run 1", 1, ["s1"])):
        with armsmod.switched_on(loaded.model, VCDConfig(seed=3), run, ids) as handle:
            seeds[key] = handle.config.seed
    assert seeds["a"] == seeds["b"] != seeds["run 1"]
    with armsmod.switched_on(loaded.model, VCDConfig(seed=None), 1, ["s1"]) as handle:
        assert handle.config.seed is None  # torch's global generator, as the official code


def test_score_rescores_a_run_by_its_folder_or_its_name(tmp_path, use_tiny, loaded, monkeypatch, capsys):
    """vasink score --run takes what vasink report takes (the run's folder) or the run's name under vasink-eval/
    (where vasink eval writes without --out); benchmark and data from run.json; the scores are the report's. A
    run that does not exist is named, with the runs that do."""
    monkeypatch.chdir(tmp_path)
    run_eval(dataclasses.replace(settings(None, limit=1), out=None), loaded=loaded)  # vasink-eval/organism-pope
    report = build_report(tmp_path / "vasink-eval" / "organism-pope", resamples=10)
    for spec in ("organism-pope", str(tmp_path / "vasink-eval" / "organism-pope")):
        for arm in ("base", "var"):
            out = tmp_path / f"{arm}.json"
            assert main(["score", "--run", spec, "--arm", arm, "--out", str(out)]) == 0
            result = json.loads(out.read_text())
            assert result["benchmark"] == "organism-pope" and result["arm"] == arm and result["n"] == 3
            assert result["metrics"]["overall"]["accuracy"] == pytest.approx(
                report["metrics"][arm]["overall"]["accuracy"])
    capsys.readouterr()
    assert main(["score", "--run", "organism-pope"]) == 2
    assert "choose one with --arm" in capsys.readouterr().err
    assert main(["score", "--run", "pope-7b", "--arm", "base"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--run pope-7b: no such run" in err and "organism-pope" in err
    assert main(["score", "--run", "organism-pope", "--bench", "pope", "--arm", "base"]) == 2
    assert "is of benchmark organism-pope" in capsys.readouterr().err
    assert main(["score", "--run", "organism-pope", "--answers", "a.jsonl"]) == 2
    assert "one of the two" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path / "vasink-eval")
    assert main(["score", "--run", "nothing"]) == 2
    assert "no runs in" in capsys.readouterr().err
