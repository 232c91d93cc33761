"""Benchmark loaders on tiny fixtures in each dataset's real column schema, and their scorers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import eval_builders as fx  # noqa: E402

from vasink.eval.data import DatasetRowError, MissingImagesError, check_images  # noqa: E402
from vasink.eval.registry import get_benchmark, known_benchmarks  # noqa: E402
from vasink.eval.report import arm_metrics  # noqa: E402
from vasink.eval.runner import make_record  # noqa: E402
from vasink.scoring import chair, cvbench_scores, mme_scores, mmvp_pair_accuracy, pope_metrics  # noqa: E402

HUB_SCHEMA_BENCHMARKS = ["pope", "mme", "mmvp", "cvbench", "vqav2", "textvqa", "vizwiz", "scienceqa-img", "seed",
                         "mmbench", "mmvet", "llava-wild", "mmhal"]


def load(bench: str, tmp_path, rows=None):
    path = fx.write_parquet(tmp_path / f"{bench}.parquet", rows if rows is not None else fx.rows_for(bench))
    return get_benchmark(bench).load(str(path))


def records_for(bench_name, samples, answers, arm="base"):
    bench = get_benchmark(bench_name)
    return [make_record(bench, s, arm, a, "h") for s, a in zip(samples, answers)]


@pytest.mark.parametrize("bench", HUB_SCHEMA_BENCHMARKS)
def test_every_real_benchmark_loads_its_hub_schema(bench, tmp_path):
    samples = load(bench, tmp_path)
    assert samples and all(s.prompt and s.id for s in samples)
    image = samples[0].load_image()
    assert image.mode == "RGB" and image.size == (32, 32)


def test_loaded_samples_carry_what_the_scorers_need(tmp_path):
    pope = load("pope", tmp_path)
    assert [s.subset for s in pope] == ["random", "random", "popular", "adversarial"]
    assert pope[0].prompt.endswith("Answer the question using a single word or phrase.")
    assert load("mmvp", tmp_path)[1].target == "B"
    cv = load("cvbench", tmp_path)
    assert [(s.target, s.meta["source"], s.subset) for s in cv] == [("B", "ADE20K", "2D"), ("A", "Omni3D", "3D")]
    sqa = load("scienceqa-img", tmp_path)[0]
    assert sqa.target == "A" and "Context: Figure: Arctic fox." in sqa.prompt and "B. camel" in sqa.prompt
    seed = load("seed", tmp_path)
    assert len(seed) == 1 and seed[0].target == "B"  # the video row is skipped
    mmb = load("mmbench", tmp_path)
    assert [s.target for s in mmb] == ["A", "C", "B"]  # circular: blue moves with the rotation
    assert load("vqav2", tmp_path)[0].target == ["2"] * 10


def test_llava_question_jsonl_with_image_folder(tmp_path):
    for name in ("COCO_val2014_000000000042.jpg", "COCO_val2014_000000000073.jpg"):
        (tmp_path / name).write_bytes(fx.png())
    samples = get_benchmark("pope").load(str(fx.FIXTURES / "pope_llava.jsonl"), images=str(tmp_path))
    assert [(s.subset, s.target) for s in samples] == [("random", "yes"), ("random", "no"),
                                                       ("adversarial", "yes"), ("adversarial", "no")]
    check_images(samples)
    assert samples[0].load_image().size == (32, 32)


def test_chair_loader_reads_coco_annotations(tmp_path):
    path = fx.coco_instances(tmp_path)
    samples = get_benchmark("chair").load(str(path))
    assert sorted((s.id, tuple(s.target)) for s in samples) == [("42", ("dog",)), ("73", ("chair",))]
    check_images(samples)


def test_malformed_row_names_file_row_and_field(tmp_path):
    rows = fx.rows_for("pope")
    del rows[2]["answer"]
    with pytest.raises(DatasetRowError, match=r"pope\.parquet: row 2: field 'answer' or 'label' is missing"):
        load("pope", tmp_path, rows)
    rows = fx.rows_for("scienceqa-img")
    rows[0]["answer"] = 5
    with pytest.raises(DatasetRowError, match=r"row 0: field 'answer' should be the index"):
        load("scienceqa-img", tmp_path, rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "image": "a.jpg", "text": "q", "label": "yes"}\n{"question_id": 2,\n')
    with pytest.raises(DatasetRowError, match=r"bad\.jsonl: row 1: not valid JSON"):
        get_benchmark("pope").load(str(bad))


def test_missing_images_are_listed_with_their_paths(tmp_path):
    samples = get_benchmark("pope").load(str(fx.FIXTURES / "pope_llava.jsonl"), images=str(tmp_path))
    with pytest.raises(MissingImagesError) as error:
        check_images(samples)
    assert str(tmp_path / "COCO_val2014_000000000042.jpg") in str(error.value)
    assert str(tmp_path / "COCO_val2014_000000000073.jpg") in str(error.value)
    assert "2 image file(s) not found" in str(error.value)


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        get_benchmark("organism-poppe")
    message = str(error.value)
    assert "did you mean 'organism-pope'" in message
    assert all(name in message for name in known_benchmarks())
    with pytest.raises(ValueError, match="no subset 'randon'.*did you mean 'random'"):
        get_benchmark("organism-pope").load(subset="randon")


def test_pope_metrics_equal_the_scoring_api(tmp_path):
    samples = load("pope", tmp_path)
    answers = ["Yes, there is.", "Yes.", "No.", "No, there is not."]
    metrics = arm_metrics(get_benchmark("pope"), records_for("pope", samples, answers))
    expected = pope_metrics(answers, [s.target for s in samples])
    assert metrics["overall"]["f1"] == pytest.approx(expected["f1"])
    assert {k: metrics["overall"][k] for k in expected} == pytest.approx(expected)
    assert metrics["random"]["accuracy"] == 0.5 and metrics["random"]["yes_ratio"] == 1.0  # the predictions' yes-ratio


def test_mme_points_equal_the_scoring_api(tmp_path):
    samples = load("mme", tmp_path)
    answers = ["Yes", "Yes", "no."]
    records = records_for("mme", samples, answers)
    metrics = arm_metrics(get_benchmark("mme"), records)["overall"]
    expected = mme_scores([{"category": s.subset, "image_id": s.image_id, "correct": r["correct"]}
                           for s, r in zip(samples, records)])
    assert metrics["color"] == pytest.approx(expected["color"]["score"]) == 50.0
    assert metrics["code_reasoning"] == pytest.approx(200.0)
    assert metrics["perception"] == pytest.approx(expected["perception"])
    assert metrics["cognition"] == pytest.approx(expected["cognition"])


def test_cvbench_and_mmvp_equal_the_scoring_api(tmp_path):
    cv = load("cvbench", tmp_path)
    records = records_for("cvbench", cv, ["(B)", "B"])
    metrics = arm_metrics(get_benchmark("cvbench"), records)["overall"]
    expected = cvbench_scores([{"source": s.meta["source"], "correct": r["correct"]} for s, r in zip(cv, records)])
    for key in ("2d", "3d", "overall"):
        assert (math.isnan(metrics[key]) and math.isnan(expected[key])) or metrics[key] == pytest.approx(expected[key])
    mmvp = load("mmvp", tmp_path)
    records = records_for("mmvp", mmvp, ["(a) Open", "b"])
    assert arm_metrics(get_benchmark("mmvp"), records)["overall"]["pair_accuracy"] == \
        mmvp_pair_accuracy([r["correct"] for r in records]) == 1.0


def test_letter_benchmarks_parse_letters_and_option_texts(tmp_path):
    seed = load("seed", tmp_path)
    bench = get_benchmark("seed")
    assert bench.score("B", "B", seed[0].meta).correct
    assert bench.score("B", "The answer is (b).", seed[0].meta).correct
    assert bench.score("B", "two", seed[0].meta).correct  # the option text picks the option
    assert not bench.score("B", "", seed[0].meta).correct
    sqa = load("scienceqa-img", tmp_path)[0]
    assert get_benchmark("scienceqa-img").score("A", "A.", sqa.meta).parsed == "A"


def test_vqa_and_gqa_scorers():
    vqa = get_benchmark("vqav2")
    assert vqa.score(["2"] * 10, "Two.", {}).stats["correct"] == 1.0
    assert vqa.score(["a dog"] * 10, "dog", {}).stats["correct"] == 1.0  # articles dropped
    assert vqa.score(["2"] * 10, "", {}).stats["correct"] == 0.0
    gqa = get_benchmark("gqa")
    assert gqa.score("yes", "Yes.", {}).correct and not gqa.score("left", "right", {}).correct


def test_organism_chair_scores_captions_against_scene_shapes():
    bench = get_benchmark("organism-chair")
    samples = bench.load(limit=3)
    truth = samples[0].target
    good = bench.score(truth, " , ".join(f"a red {s}" for s in truth) + " .", {})
    assert good.correct and good.stats["recalled"] == len(truth)
    absent = next(s for s in ("circle", "square", "star", "bar") if s not in truth)
    bad = bench.score(truth, f"a red {absent} .", {})
    assert not bad.correct and bad.parsed == [absent]
    records = records_for("organism-chair", samples, [f"a red {absent} ."] * len(samples))
    expected = chair([r["raw"] for r in records], [s.target for s in samples],
                     vocabulary=["circle", "square", "triangle", "diamond", "cross", "ring", "star", "bar"])
    metrics = arm_metrics(bench, records)["overall"]
    assert {k: metrics[k] for k in ("chair_s", "chair_i", "recall")} == pytest.approx(
        {k: expected[k] for k in ("chair_s", "chair_i", "recall")})


def test_organism_benchmarks_are_fixed_and_cover_their_subsets():
    pope = get_benchmark("organism-pope").load(limit=4)
    assert [s.id for s in pope] == [s.id for s in get_benchmark("organism-pope").load(limit=4)]
    assert {s.subset for s in pope} == {"random", "popular", "adversarial"} and len(pope) == 12
    cv = get_benchmark("organism-cvbench").load(limit=3)
    assert {s.subset for s in cv} == {"count", "spatial"}
    bench = get_benchmark("organism-cvbench")
    count = next(s for s in cv if s.subset == "count")
    word = count.meta["choices"]["ABCD".index(count.target)]
    assert bench.score(count.target, word, count.meta).stats == {"correct": 1.0, "n_count": 1.0, "right_count": 1.0}
    attribute = get_benchmark("organism-attribute").load(limit=2)[0]
    assert get_benchmark("organism-attribute").score(attribute.target, attribute.target + " .", {}).correct


def test_report_metrics_work_on_resample_blocks():
    bench = get_benchmark("pope")
    stats = {"tp": np.array([[1, 0, 1], [0, 0, 0]], float), "fp": np.zeros((2, 3)), "fn": np.zeros((2, 3)),
             "correct": np.ones((2, 3)), "yes": np.array([[1, 0, 1], [0, 0, 0]], float)}
    metrics = bench.metrics(stats)
    assert metrics["precision"].tolist() == [1.0, 0.0] and metrics["f1"].tolist() == [1.0, 0.0]


def test_judged_benchmarks_read_the_judge_reply(tmp_path, monkeypatch):
    from vasink.eval.benchmarks import judged

    replies = iter(["0.7", "8 6\nAssistant 2 is less detailed.", "The answer invents a dog.\nRating: 2"])
    prompts = []

    def fake_ask(prompt, max_tokens=256):
        prompts.append(prompt)
        return next(replies)
    monkeypatch.setattr(judged, "ask", fake_ask)
    mmvet = load("mmvet", tmp_path)[0]
    scored = get_benchmark("mmvet").score(mmvet.target, "x = -1 or -5", {"question": mmvet.question})
    assert scored.stats == {"score": 0.7}
    assert "-1 <AND> -5" in prompts[0]
    wild = get_benchmark("llava-wild").score("Mount Rushmore.", "A mountain.", {})
    assert wild.stats == {"judge_reference": 8.0, "judge_model": 6.0}
    hal = get_benchmark("mmhal").score("The fox is white.", "A brown dog.", {"contents": "Fox, Snow"})
    assert hal.parsed == 2.0 and hal.correct is False and hal.stats["hallucinated"] == 1.0


def test_datasets_folder_saved_from_the_hub_layout(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = fx.rows_for("pope")
    features = datasets.Features({"question_id": datasets.Value("string"), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string"), "image_source": datasets.Value("string"),
                                  "image": datasets.Image(), "category": datasets.Value("string")})
    table = datasets.Dataset.from_list(rows, features=features)
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "pope"))
    samples = get_benchmark("pope").load(str(tmp_path / "pope"), subset="random")
    assert [s.target for s in samples] == ["yes", "no"]
    assert callable(samples[0].image)  # images stay undecoded until a batch needs them
    assert samples[0].load_image().size == (32, 32)


@pytest.mark.parametrize("bench", ["gqa", "mmvp", "seed", "scienceqa-img", "textvqa", "vizwiz", "vqav2", "mme",
                                   "cvbench"])
def test_llava_question_files_work_for_non_judge_benchmarks(bench, tmp_path):
    rows = fx.llava_rows(bench)
    (tmp_path / "color").mkdir()
    for row in rows:
        (tmp_path / row["image"]).write_bytes(fx.png())
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    benchmark = get_benchmark(bench)
    samples = benchmark.load(str(path))
    check_images(samples)
    assert samples[0].load_image().size == (32, 32)
    assert samples[0].prompt.count(benchmark.prompt_suffix.strip() or "\0") <= 1  # the suffix is not doubled
    truth = {"gqa": "yes", "mmvp": "(b) Closed", "seed": "B", "scienceqa-img": "A", "textvqa": "Nokia",
             "vizwiz": "nokia", "vqav2": "nokia", "mme": "Yes", "cvbench": "2"}[bench]
    score = benchmark.score(samples[0].target, truth, {**samples[0].meta, "question": samples[0].question})
    assert score.stats["correct"] == 1.0


def test_gqa_hub_instruction_schema_with_an_image_folder(tmp_path):
    (tmp_path / "n288870.jpg").write_bytes(fx.png())
    path = fx.write_parquet(tmp_path / "testdev_balanced_instructions.parquet", fx.rows_for("gqa"))
    samples = get_benchmark("gqa").load(str(path))
    check_images(samples)
    assert samples[0].target == "yes" and samples[0].image_id == "n288870"


def test_hub_dataset_that_cannot_load_names_it_and_the_way_out(monkeypatch, tmp_path, capsys):
    """Offline, an unknown id, or a script-based dataset (MMHal-Bench's hub copy): one clear error, no traceback."""
    datasets = pytest.importorskip("datasets")

    def refuse(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found MMHal-Bench.py")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    from vasink.cli import main
    from vasink.eval.data import HubDatasetError

    with pytest.raises(HubDatasetError, match=r"(?s)'Shengcao1006/MMHal-Bench'.*scripts are no longer.*--data PATH"):
        get_benchmark("mmhal").load()
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "1", "text": "yes"}) + "\n")
    assert main(["score", "--bench", "pope", "--answers", str(answers), "--data", "someone/pope-copy"]) == 2
    assert "could not load the hub dataset 'someone/pope-copy'" in capsys.readouterr().err


def test_answers_made_by_llavas_scripts_match_their_samples(tmp_path):
    """LLaVA's answer files name MME questions by image id + prompt, MMBench by index + round, MMVP unpadded."""
    from vasink.eval.score import score_answers

    def answers(name, lines):
        path = tmp_path / f"{name}-answers.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return path

    suffix = "\nAnswer the question using a single word or phrase."
    mme = answers("mme", [
        {"question_id": "color/000000006723.jpg", "prompt": "Is the car red? Please answer yes or no." + suffix,
         "text": "Yes"},
        {"question_id": "color/000000006723.jpg", "prompt": "Is the car blue? Please answer yes or no." + suffix,
         "text": "Yes"},
        {"question_id": "code_reasoning/0020.png", "prompt": "Is the output 3? Please answer yes or no." + suffix,
         "text": "No"}])
    result = score_answers("mme", mme, str(fx.write_parquet(tmp_path / "mme.parquet", fx.rows_for("mme"))))
    # MME points: color 50 (acc 50 + acc+ 0: one of the image's two answers wrong), code_reasoning 200
    assert result["n"] == 3 and result["metrics"]["overall"]["color"] == 50.0
    assert result["metrics"]["overall"]["code_reasoning"] == 200.0

    mmbench = answers("mmbench", [{"question_id": 241, "round_idx": r, "text": t}
                                  for r, t in enumerate(["A", "B", "B"])])  # rotated: right, right, wrong
    data = str(fx.write_parquet(tmp_path / "mmbench.parquet", fx.rows_for("mmbench")))
    result = score_answers("mmbench", mmbench, data)
    assert result["n"] == 3 and result["metrics"]["overall"]["circular_accuracy"] == 0.0
    assert result["metrics"]["overall"]["accuracy"] == pytest.approx(2 / 3)

    mmvp = answers("mmvp", [{"question_id": 1, "text": "(a)"}, {"question_id": 2, "text": "(b)"}])
    result = score_answers("mmvp", mmvp, str(fx.write_parquet(tmp_path / "mmvp.parquet", fx.rows_for("mmvp"))))
    assert result["n"] == 2
