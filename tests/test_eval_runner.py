"""The eval runner end to end on a tiny random LLaVA: records, resume, shards, config checks, sweep, CLI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import eval_builders as fx  # noqa: E402
from conftest import SINK_DIMS, tiny_llava, tiny_processor  # noqa: E402

from vasink import VARConfig  # noqa: E402
from vasink.cli import main  # noqa: E402
from vasink.eval import loading, runner  # noqa: E402
from vasink.eval.data import MissingImagesError  # noqa: E402
from vasink.eval.records import ConfigMismatch, read_records  # noqa: E402
from vasink.eval.report import build_report  # noqa: E402
from vasink.eval.runner import EvalSettings, run_eval  # noqa: E402
from vasink.eval.sweep import run_sweep  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def loaded():
    return loading.LoadedModel(tiny_llava(num_layers=3), tiny_processor(), "tiny-llava",
                               VARConfig(sink_dims=SINK_DIMS, tau=3.0))


@pytest.fixture
def use_tiny(monkeypatch, loaded):
    calls = []

    def fake_load(spec="organism", device=None, dtype=None):
        calls.append(spec)
        return loaded
    monkeypatch.setattr(loading, "load_model", fake_load)
    return calls


def lock_holder(records: Path):
    """Another process that holds the writer lock of ``records`` (as a running ``vasink eval`` does) until killed."""
    import subprocess
    import textwrap

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from vasink.eval.records import writer_lock
        with writer_lock(Path({str(records)!r})):
            print("locked", flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def settings(out, **kw):
    return EvalSettings(**{"bench": "organism-pope", "limit": 4, "batch_size": 4, "out": str(out),
                           "progress": False, **kw})


def report_json(out) -> dict:
    build_report(out, resamples=200)
    return json.loads((Path(out) / "report.json").read_text())


def test_cli_eval_organism_pope_end_to_end(tmp_path, use_tiny, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--model", "organism", "--bench", "organism-pope", "--limit", "3", "--var", "both",
                 "--batch-size", "4", "--out", str(out), "--resamples", "100"]) == 0
    assert use_tiny == ["organism"]
    records = read_records(out)
    assert len(records) == 2 * 9 and {r["arm"] for r in records} == {"base", "var"}
    first = records[0]
    assert set(first) >= {"id", "arm", "prompt_hash", "raw", "parsed", "correct", "stats", "config_hash"}
    assert first["parsed"] in ("yes", "no")
    for name in ("report.md", "report.json", "report.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "McNemar p" in md and "| random (n=3) | accuracy |" in md
    rows = json.loads((out / "report.json").read_text())["comparisons"]["var"]["scopes"]["overall"]["metrics"]
    assert rows["accuracy"]["mcnemar_p"] is not None and len(rows["accuracy"]["ci95"]) == 2
    # the same command again: nothing to do
    assert main(["eval", "--bench", "organism-pope", "--limit", "3", "--batch-size", "4", "--out", str(out),
                 "--no-report"]) == 0
    assert "0 answers generated, 18 already done" in capsys.readouterr().out


def test_resume_after_kill_gives_the_same_report(tmp_path, loaded):
    whole = tmp_path / "whole"
    run_eval(settings(whole), loaded=loaded)
    killed = tmp_path / "killed"

    def kill_after_two(batch_index):
        if batch_index == 1:
            raise KeyboardInterrupt("simulated kill")
    with pytest.raises(KeyboardInterrupt):
        run_eval(settings(killed), loaded=loaded, after_batch=kill_after_two)
    assert len(read_records(killed)) == 2 * 2 * 4  # two batches of 4, both arms
    with (killed / "records.jsonl").open("a") as f:  # a kill -9 in the middle of a write
        f.write('{"id": "s0001-existence-random-0", "arm": "ba')
    summary = run_eval(settings(killed), loaded=loaded)
    assert summary["generated"] == 2 * 12 - 16 and summary["skipped"] == 16
    assert report_json(killed) == report_json(whole)
    assert sorted(json.dumps(r, sort_keys=True) for r in read_records(killed)) == \
        sorted(json.dumps(r, sort_keys=True) for r in read_records(whole))


def test_shards_merge_to_the_unsharded_run(tmp_path, loaded):
    whole = tmp_path / "whole"
    run_eval(settings(whole, limit=3, batch_size=2), loaded=loaded)
    sharded = tmp_path / "sharded"
    for index in range(3):
        run_eval(settings(sharded, limit=3, batch_size=2, shard=(index, 3)), loaded=loaded)
    files = sorted(p.name for p in sharded.glob("records*.jsonl"))
    assert files == [f"records.shard-{i}-of-3.jsonl" for i in range(3)]
    ids = [{(r["id"], r["arm"]) for r in read_records(sharded, [sharded / f])} for f in files]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert report_json(sharded) == report_json(whole)
    assert main(["report", str(sharded), "--resamples", "50"]) == 0


def test_changed_config_in_the_same_out_is_refused(tmp_path, loaded):
    out = tmp_path / "run"
    run_eval(settings(out, limit=2, rho=0.5), loaded=loaded)
    before = (out / "records.jsonl").read_bytes()
    with pytest.raises(ConfigMismatch, match=r"arm 'var' run with another VAR config \(differs in rho"):
        run_eval(settings(out, limit=2, rho=0.7), loaded=loaded)
    with pytest.raises(ConfigMismatch, match="benchmark='organism-pope', but this run has benchmark='organism-attr"):
        run_eval(settings(out, bench="organism-attribute", limit=2), loaded=loaded)
    assert (out / "records.jsonl").read_bytes() == before
    run_eval(settings(out, limit=3, rho=0.5), loaded=loaded)  # a larger --limit extends the same run
    assert len(read_records(out)) == 2 * 9


def test_cli_refuses_changed_config_with_a_message(tmp_path, use_tiny, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--bench", "organism-pope", "--limit", "1", "--out", str(out), "--no-report"]) == 0
    assert main(["eval", "--bench", "organism-pope", "--limit", "1", "--out", str(out), "--p", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "another VAR config (differs in p 0.6 -> 0.3)" in err
    assert "sink_dims" not in err  # stored as a list, given as a tuple: equal, so not a difference


def test_sweep_reuses_the_base_arm(tmp_path, loaded, monkeypatch):
    out = tmp_path / "sweep"
    run_eval(settings(out, limit=2, var="off"), loaded=loaded)
    arms_generated = []
    real_generate = runner.generate

    def counting(loaded_, images, prompts, max_new_tokens, config=None, **kw):
        arms_generated.append(None if config is None else (config.rho, config.p))
        return real_generate(loaded_, images, prompts, max_new_tokens, config, **kw)
    monkeypatch.setattr(runner, "generate", counting)
    summary = run_sweep(settings(out, limit=2), rhos=[0.5, 0.8], ps=[0.6], taus=[None], loaded=loaded)
    assert None not in arms_generated and sorted(set(arms_generated)) == [(0.5, 0.6), (0.8, 0.6)]
    assert summary["skipped"] == 6 and summary["generated"] == 12
    report = report_json(out)
    assert sorted(report["comparisons"]) == ["var-rho0.5-p0.6-tau3", "var-rho0.8-p0.6-tau3"]


def test_sweep_after_an_eval_keeps_its_samples_and_reuses_its_var_arm(tmp_path, loaded, monkeypatch):
    """No --limit after an eval with one: the eval's samples, not the whole benchmark; a grid point equal to
    the eval's var arm is that arm (its records reused), not a second copy."""
    out = tmp_path / "run"
    run_eval(settings(out, limit=2), loaded=loaded)  # base and var (rho 0.5), 2 samples per subset
    arms_generated = []
    real_generate = runner.generate

    def counting(loaded_, images, prompts, max_new_tokens, config=None, **kw):
        arms_generated.append(None if config is None else config.rho)
        return real_generate(loaded_, images, prompts, max_new_tokens, config, **kw)
    monkeypatch.setattr(runner, "generate", counting)
    said = []
    summary = run_sweep(settings(out, limit=None), rhos=[0.5, 0.8], ps=[None], taus=[None], loaded=loaded,
                        echo=said.append)
    assert set(arms_generated) == {0.8} and summary["generated"] == 6 and summary["skipped"] == 12
    assert "no --limit, so the 6 samples" in said[0]
    assert sorted(report_json(out)["comparisons"]) == ["var", "var-rho0.8-p0.6-tau3"]


def test_judge_benchmark_without_key_stops_before_generating(tmp_path, use_tiny, monkeypatch, capsys):
    for var in ("VASINK_JUDGE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    data = fx.write_parquet(tmp_path / "mmvet.parquet", fx.rows_for("mmvet"))
    out = tmp_path / "run"
    assert main(["eval", "--bench", "mmvet", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "VASINK_JUDGE_API_KEY" in err and "OPENAI_API_KEY" in err and "Nothing was generated" in err
    assert use_tiny == [] and not out.exists()


def test_missing_images_are_reported_and_nothing_written_is_lost(tmp_path, loaded):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("COCO_val2014_000000000042.jpg", "COCO_val2014_000000000073.jpg"):
        (images / name).write_bytes(fx.png())
    data = str(fx.FIXTURES / "pope_llava.jsonl")
    out = tmp_path / "run"
    run_eval(settings(out, bench="pope", data=data, images=str(images), limit=1), loaded=loaded)
    before = (out / "records.jsonl").read_bytes()
    (images / "COCO_val2014_000000000073.jpg").unlink()
    with pytest.raises(MissingImagesError, match=str(images / "COCO_val2014_000000000073.jpg")):
        run_eval(settings(out, bench="pope", data=data, images=str(images)), loaded=loaded)
    assert (out / "records.jsonl").read_bytes() == before
    assert len(read_records(out)) == 4  # 2 subsets x 1 sample x 2 arms, kept


def test_unknown_benchmark_from_the_cli(capsys):
    assert main(["eval", "--bench", "popee"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'pope'" in err and "organism-pope" in err


def test_score_command_scores_llava_answers(tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(json.dumps({"question_id": i, "prompt": "", "text": t, "answer_id": "x"})
                                 for i, t in ((1, "Yes"), (2, "No"), (3, "No"), (4, "No"))) + "\n")
    result_file = tmp_path / "scores.json"
    assert main(["score", "--bench", "pope", "--answers", str(answers), "--data",
                 str(fx.FIXTURES / "pope_llava.jsonl"), "--out", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert result["metrics"]["overall"]["accuracy"] == 0.75 and result["metrics"]["random"]["accuracy"] == 1.0
    assert "overall: accuracy=0.75" in capsys.readouterr().out


def test_score_command_on_vasink_records_scores_one_arm(tmp_path, capsys):
    """A records file holds one line per (sample, arm): score the arm chosen, refuse to mix them."""
    from vasink.eval.registry import get_benchmark

    samples = get_benchmark("pope").load(str(fx.FIXTURES / "pope_llava.jsonl"), None, None, None)
    answers = {"base": "yes", "var": "no"}
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"id": s.id, "arm": arm, "raw": text}) + "\n"
                               for s in samples for arm, text in answers.items()))
    bench = ["score", "--bench", "pope", "--data", str(fx.FIXTURES / "pope_llava.jsonl"), "--answers", str(records)]
    assert main(bench) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--arm" in err and "base, var" in err
    for arm, text in answers.items():
        out = tmp_path / f"{arm}.json"
        assert main(bench + ["--arm", arm, "--out", str(out)]) == 0
        result = json.loads(out.read_text())
        expected = sum(s.target == text for s in samples) / len(samples)
        assert result["n"] == len(samples) and result["metrics"]["overall"]["accuracy"] == pytest.approx(expected)
        assert all(v <= 1 for scope in result["metrics"].values() for k, v in scope.items() if k != "n")
    assert main(bench + ["--arm", "vra"]) == 2
    assert "its arms: base, var" in capsys.readouterr().err
    doubled = tmp_path / "doubled.jsonl"  # one arm, an id twice: refused, not counted twice
    doubled.write_text(records.read_text().replace('"var"', '"base"'))
    assert main(["score", "--bench", "pope", "--data", str(fx.FIXTURES / "pope_llava.jsonl"),
                 "--answers", str(doubled)]) == 2
    assert "more than once" in capsys.readouterr().err


ORGANISM = Path(loading.__file__).parent.parent / "organism" / "checkpoint"


@pytest.mark.skipif(not (ORGANISM / "vision.safetensors").exists(), reason="the organism checkpoint is not shipped")
def test_real_organism_pope_with_limit(tmp_path):
    measured = (ORGANISM / "vasink.json").exists()  # sink dims and tau, needed by the VAR arm
    out = tmp_path / "organism"
    summary = run_eval(settings(out, limit=4, batch_size=8, var="both" if measured else "off"))
    assert summary["generated"] == (24 if measured else 12)
    report = report_json(out)
    assert report["run"]["model"] == "organism"
    assert 0.0 <= report["metrics"]["base"]["overall"]["accuracy"] <= 1.0
    assert all(r["parsed"] in ("yes", "no") for r in read_records(out))


def test_shard_from_the_command_line_and_from_accelerate(monkeypatch, tmp_path):
    assert runner.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1-4"):
        with pytest.raises(ValueError, match="--shard"):
            runner.parse_shard(bad)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    _, _, samples, shard = runner.prepare(settings(tmp_path, limit=2))
    assert shard == (1, 2) and len(samples) == 3


def test_report_lists_changed_answers_and_counts_discordant_pairs(tmp_path, loaded, monkeypatch):
    def scripted(loaded_, images, prompts, max_new_tokens, config=None, **kw):  # VAR says "no" to circles only
        return ["no" if config is not None and "circle" in p else "yes" for p in prompts]
    monkeypatch.setattr(runner, "generate", scripted)
    out = tmp_path / "run"
    run_eval(settings(out, limit=4), loaded=loaded)
    report = report_json(out)
    comparison = report["comparisons"]["var"]
    changed = comparison["changed"]
    assert changed and all("circle" in c["question"] and c["base"] == "yes" and c["arm"] == "no" for c in changed)
    assert all(c["image_id"].startswith("test-0-") for c in changed)
    row = comparison["scopes"]["overall"]["metrics"]["accuracy"]
    records = [r for r in read_records(out) if r["arm"] == "base" and "circle" in r["question"]]
    assert row["only_arm_right"] == sum(r["target"] == "no" for r in records)
    assert row["only_base_right"] == sum(r["target"] == "yes" for r in records)
    assert "answers that changed" in (out / "report.md").read_text()


def test_model_from_a_local_folder_loads_with_auto_classes(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "tiny-llava"
    model = tiny_llava(num_layers=3)
    model.config.architectures = ["LlavaForConditionalGeneration"]
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    import transformers

    load_kwargs = {}
    original = transformers.LlavaForConditionalGeneration.from_pretrained.__func__
    monkeypatch.setattr(transformers.LlavaForConditionalGeneration, "from_pretrained",
                        classmethod(lambda cls, *a, **k: load_kwargs.update(k) or original(cls, *a, **k)))
    loaded_model = loading.load_model(str(folder), device="cpu")
    assert type(loaded_model.model).__name__ == "LlavaForConditionalGeneration"
    if importlib.util.find_spec("accelerate"):  # weights placed on the device while loading, not moved after
        assert load_kwargs["device_map"] == "cpu"
    assert loaded_model.device.type == "cpu"
    assert loaded_model.processor.tokenizer.padding_side == "left"
    out = tmp_path / "run"
    assert main(["eval", "--model", str(folder), "--bench", "organism-pope", "--limit", "1", "--var", "off",
                 "--out", str(out), "--device", "cpu", "--resamples", "10"]) == 0
    assert main(["eval", "--model", str(folder), "--bench", "organism-pope", "--limit", "1", "--var", "on",
                 "--sink-dims", "5,40", "--tau", "3", "--out", str(tmp_path / "on"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "on" / "run.json").read_text())["arms"]["var"]["config"]["sink_dims"] == [5, 40]
    assert json.loads((out / "run.json").read_text())["run"]["model"] == str(folder)


def test_another_runs_folder_is_refused_before_the_model_loads(tmp_path, use_tiny):
    out = tmp_path / "run"
    run_eval(settings(out, limit=1))
    assert use_tiny == ["organism"]
    with pytest.raises(ConfigMismatch, match="benchmark="):
        run_eval(settings(out, bench="organism-attribute", limit=1))
    assert use_tiny == ["organism"]  # not loaded a second time


def test_a_model_without_sink_facts_runs_base_and_asks_for_dims_for_var(tmp_path, loaded):
    unmeasured = loading.LoadedModel(loaded.model, loaded.processor, "organism", None,
                                     "checkpoint/vasink.json is missing: the checkpoint has not been measured")
    run_eval(settings(tmp_path / "off", limit=1, var="off"), loaded=unmeasured)
    with pytest.raises(ValueError, match="vasink.json is missing.*pass --sink-dims and --tau"):
        run_eval(settings(tmp_path / "on", limit=1), loaded=unmeasured)
    run_eval(settings(tmp_path / "dims", limit=1, sink_dims=SINK_DIMS, tau=3.0), loaded=unmeasured)


def test_unknown_sink_dims_fail_before_anything_is_generated(tmp_path, loaded, monkeypatch):
    generated = []
    monkeypatch.setattr(runner, "generate", lambda *a, **k: generated.append(1) or ["yes"] * len(a[2]))
    auto = loading.LoadedModel(loaded.model, loaded.processor, "tiny", VARConfig())  # "auto": not in the table
    with pytest.raises(ValueError, match="no known sink dimensions"):
        run_eval(settings(tmp_path / "run", limit=1), loaded=auto)
    assert generated == [] and not (tmp_path / "run" / "records.jsonl").exists()


def test_samples_sharing_an_image_decode_it_once():
    from PIL import Image

    from vasink.eval.registry import Sample

    calls = []

    def decode():
        calls.append(1)
        return Image.new("RGB", (8, 8))

    rotations = [Sample(id=f"7-r{r}", prompt="q", target="A", image=decode) for r in range(3)]
    other = Sample(id="8-r0", prompt="q", target="A", image=lambda: Image.new("RGB", (4, 4)))
    images = runner.load_images(rotations + [other])
    assert len(calls) == 1 and images["7-r2"] is images["7-r0"] and images["8-r0"].size == (4, 4)


def test_a_failed_start_generates_nothing_and_its_corrected_rerun_runs_in_the_same_out(tmp_path, use_tiny, capsys,
                                                                                        monkeypatch):
    generated = []
    real_generate = runner.generate
    monkeypatch.setattr(runner, "generate", lambda *a, **k: generated.append(k.get("config", a[4] if len(a) > 4
                                                                                    else None)) or real_generate(*a, **k))
    out = tmp_path / "run"
    base = ["eval", "--bench", "organism-pope", "--limit", "1", "--batch-size", "4", "--out", str(out), "--no-report"]
    assert main([*base, "--tau", "30"]) == 2
    message = capsys.readouterr().err
    assert "--tau 30 can never be reached" in message and "pass a --tau below 8.00" in message
    assert "leave --tau out" in message and "VARConfig" not in message and "find_sink_dims" not in message
    assert generated == [] and not (out / "records.jsonl").exists()  # the check ran before the base arm
    assert main([*base, "--tau", "3"]) == 0  # the corrected command, same --out
    assert {r["arm"] for r in read_records(out)} == {"base", "var"}


def test_settings_that_produced_no_answer_do_not_bind_the_folder(tmp_path, loaded):
    from vasink.eval import records

    out = tmp_path / "run"
    run = {"benchmark": "organism-pope", "model": "x"}
    records.check_run(out, run, {"var": {"tau": 5.0}})  # a start that failed before its first answer
    records.check_run(out, run, {"var": {"tau": 4.0}})  # the corrected one is not refused
    records.check_run(out, {**run, "model": "y"}, {})
    run_eval(settings(out, limit=1, tau=3.0), loaded=loaded)  # answers now bind the folder
    with pytest.raises(ConfigMismatch, match="tau 3.0 -> 2.0.*pass another --out"):
        run_eval(settings(out, limit=1, tau=2.0), loaded=loaded)


def test_a_second_writer_into_the_same_out_is_refused_and_a_killed_holder_does_not_block(tmp_path, loaded, capsys,
                                                                                           monkeypatch):
    import os
    import signal

    from vasink.eval.records import RunInProgress, writer_lock

    out = tmp_path / "run"
    run_eval(settings(out, limit=1), loaded=loaded)
    kept = (out / "records.jsonl").read_text()
    holder = lock_holder(out / "records.jsonl")
    try:
        with pytest.raises(RunInProgress, match=f"process {holder.pid} on .*pass another --out"):
            run_eval(settings(out, limit=2), loaded=loaded)
        monkeypatch.setattr(loading, "load_model", lambda *a, **k: loaded)
        assert main(["eval", "--bench", "organism-pope", "--limit", "2", "--out", str(out), "--no-report"]) == 2
        assert f"process {holder.pid}" in capsys.readouterr().err
        assert (out / "records.jsonl").read_text() == kept  # the refused writer wrote nothing
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # killed while holding the lock: its lock file stays behind
        holder.wait()
    assert (out / "records.jsonl.lock").read_text().startswith(f"process {holder.pid}")
    run_eval(settings(out, limit=2), loaded=loaded)  # ... and does not block the next run
    records = read_records(out)
    assert len(records) == 2 * 6 and len({(r["id"], r["arm"]) for r in records}) == len(records)
    with writer_lock(out / "records.jsonl"):  # another shard writes another file: not refused
        run_eval(settings(out, limit=2, shard=(0, 2)), loaded=loaded)


def test_a_resume_over_changed_questions_is_refused(tmp_path, loaded):
    """Answers are reused only for the questions the data holds now: a prompt or target edited in place since
    (a fixed question file) is refused, naming the sample; the unchanged data resumes."""
    import dataclasses

    out = tmp_path / "run"
    run_eval(settings(out, limit=2), loaded=loaded)
    before = (out / "records.jsonl").read_bytes()
    bench, subset, samples, shard = runner.prepare(settings(out, limit=2))
    for field, value in (("prompt", samples[1].prompt + " please"), ("target", "maybe")):
        edited = [samples[0], dataclasses.replace(samples[1], **{field: value})]
        with pytest.raises(ConfigMismatch, match=rf"holds 2 answers for questions that the data now asks "
                                                 rf"differently \(sample '{samples[1].id}': its {field} changed"):
            run_eval(settings(out, limit=2), loaded=loaded, prepared=(bench, subset, edited, shard))
    assert (out / "records.jsonl").read_bytes() == before
    assert run_eval(settings(out, limit=2), loaded=loaded)["skipped"] == 2 * 6  # two arms, two of each subset


def test_a_resume_in_another_precision_is_refused(tmp_path, loaded):
    """run.json records the weights' dtype once the model is loaded: float16 answers never mix into a float32
    run (the message names --dtype); a folder written before dtype was recorded still resumes."""
    import copy

    out = tmp_path / "run"
    run_eval(settings(out, limit=1, var="off"), loaded=loaded)
    run_file = out / "run.json"
    assert json.loads(run_file.read_text())["run"]["dtype"] == "float32"
    half = loading.LoadedModel(copy.deepcopy(loaded.model).to(torch.bfloat16), loaded.processor, loaded.name,
                               loaded.var_config)
    with pytest.raises(ConfigMismatch, match="dtype='float32', but this run has dtype='bfloat16'.*pass --dtype float32"):
        run_eval(settings(out, limit=1, var="off"), loaded=half)
    stored = json.loads(run_file.read_text())
    del stored["run"]["dtype"]  # as a folder written before dtype was recorded: its answers' hashes had no dtype
    from vasink.eval import records
    assert records.check_run(tmp_path / "old", stored["run"], {"base": None})["base"] \
        == stored["arms"]["base"]["config_hash"]
    run_file.write_text(json.dumps(stored))
    assert run_eval(settings(out, limit=1, var="off"), loaded=loaded)["skipped"] == 3  # one of each subset
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16, got 'half'"):
        loading.load_model("organism", "cpu", "half")


def test_a_shard_started_beside_another_with_other_settings_is_refused(tmp_path, loaded):
    """Before shard 0 has written an answer, its settings bind the folder while it runs: shard 1 with another rho
    is refused (it used to replace them, and the report dropped shard 0's answers); with the same settings it
    runs; once shard 0 has stopped without answering, a corrected start may replace them."""
    import os
    import signal

    from vasink.eval import records

    out = tmp_path / "run"
    shard0 = settings(out, limit=2, rho=0.5, shard=(0, 2))
    bench, subset, samples, shard = runner.prepare(shard0)
    run = {**runner.run_description(shard0, bench, subset, "tiny-llava"), "dtype": "float32"}
    arms = runner.var_arms(shard0, bench, loaded)
    records.check_run(out, run, {n: a.payload() for n, a in arms.items()},
                      {n: a.decoding.payload() for n, a in arms.items()})  # what shard 0 wrote at its start
    holder = lock_holder(out / "records.shard-0-of-2.jsonl")
    try:
        with pytest.raises(ConfigMismatch, match=r"differs in rho 0.5 -> 0.9.*another process is writing into it"):
            run_eval(settings(out, limit=2, rho=0.9, shard=(1, 2)), loaded=loaded)
        assert not (out / "records.shard-1-of-2.jsonl").exists()
        assert run_eval(settings(out, limit=2, rho=0.5, shard=(1, 2)), loaded=loaded)["generated"] == 3 * 2
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    fresh = tmp_path / "fresh"
    records.check_run(fresh, run, {"var": {"rho": 0.5}})  # a start that failed, no writer left
    run_eval(settings(fresh, limit=1, rho=0.9), loaded=loaded)


def test_runs_without_a_sampled_arm_are_refused(tmp_path, loaded):
    with pytest.raises(ValueError, match="--runs 3 asks for 3 sampled answers per sample, but every arm decodes "
                                         "greedily under --decoding greedy"):
        run_eval(settings(tmp_path / "greedy", limit=1, runs=3), loaded=loaded)
    assert not (tmp_path / "greedy").exists()
    assert run_eval(settings(tmp_path / "vcd", limit=1, arms=("base", "vcd"), decoding="official", runs=2),
                    loaded=loaded)["generated"] == 1 * 3 + 2 * 3  # base greedy once, VCD sampled twice


def test_an_exported_organism_brings_its_own_sink_facts_and_name(tmp_path, loaded, monkeypatch):
    """load_model(DIR) of a `vasink organism train` export: VAR with the run's measured sink dims and tau (never
    the shipped model's), the folder as the model's name; unmeasured, VAR arms say how to measure it."""
    from vasink import organism

    monkeypatch.setattr(organism, "load", lambda path=None: (loaded.model, loaded.processor))
    export = tmp_path / "checkpoint"
    export.mkdir()
    (export / "organism.json").write_text("{}")
    unmeasured = loading.load_model(str(export), "cpu")
    assert unmeasured.var_config is None and unmeasured.name == str(export)
    assert f"python -m vasink.organism.measure --ckpt {export}" in unmeasured.var_config_missing
    (export / "vasink.json").write_text(json.dumps({"sink_dims": [5, 40], "tau": 3.0, "visual_sinks": True}))
    measured = loading.load_model(str(export), "cpu")
    assert (measured.var_config.sink_dims, measured.var_config.tau) == ((5, 40), 3.0)
    with pytest.warns(UserWarning, match="the shipped organism"):
        assert organism.recommended_config().sink_dims != (5, 40)  # the shipped model's own
