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
    assert [s.target for s in mmb] == ["A", "C", "B", "B", "A"]  # one sample per row: the split's own rotations
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
    with pytest.raises(DatasetRowError, match=r"bad\.jsonl: line 2: not valid JSON"):  # lines from 1, as editors
        get_benchmark("pope").load(str(bad))
    bad.write_text('{"question_id": 1, "image": "a.jpg", "text": "q", "label": "yes", "category": "random"}\n'
                   '{"question_id": 2}\n')
    with pytest.raises(DatasetRowError, match=r"bad\.jsonl: line 2: field"):
        get_benchmark("pope").load(str(bad))


def test_question_files_from_other_tools_load_or_say_what_to_do(tmp_path):
    rows = [{"question_id": 1, "image": "a.jpg", "text": "Is there a caf\u00e9?", "label": "yes", "category": "random"},
            {"question_id": 2, "image": "b.jpg", "text": "Is there a dog?", "label": "no", "category": "random"}]
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes("\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("latin-1"))
    with pytest.raises(DatasetRowError, match=r"latin\.jsonl: line 1: not UTF-8 text \(byte 0xe9.*iconv"):
        get_benchmark("pope").load(str(latin))
    spreadsheet = tmp_path / "pope.csv"  # as a spreadsheet saves CSV: UTF-8 with a byte-order mark
    spreadsheet.write_bytes(("question_id,image,text,label,category\r\n"
                             + "".join(f"{r['question_id']},{r['image']},{r['text']},{r['label']},{r['category']}\r\n"
                                       for r in rows)).encode("utf-8-sig"))
    samples = get_benchmark("pope").load(str(spreadsheet))
    assert [s.source_id or s.id for s in samples] == ["1", "2"] and samples[0].question.endswith("café?")
    spreadsheet.write_bytes(spreadsheet.read_bytes().replace(b",yes,", b",,"))
    with pytest.raises(DatasetRowError, match=r"pope\.csv: line 2: field 'answer' should be yes or no"):
        get_benchmark("pope").load(str(spreadsheet))
    url = tmp_path / "url.jsonl"
    url.write_text(json.dumps({**rows[0], "image": "https://example.org/val2014/a.jpg"}) + "\n")
    with pytest.raises(DatasetRowError, match=r"url\.jsonl: line 1: field 'image' is a URL "
                                              r"\(https://example\.org/val2014/a\.jpg\).*--images"):
        get_benchmark("pope").load(str(url))


def test_a_misspelt_benchmark_name_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown benchmark 'POPE'; did you mean 'pope'"):
        get_benchmark("POPE")


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

    def fake_ask(prompt, max_tokens=256, **options):
        prompts.append(prompt)
        return next(replies)
    monkeypatch.setattr(judged, "ask", fake_ask)
    mmvet = load("mmvet", tmp_path)[0]
    scored = get_benchmark("mmvet").score(mmvet.target, "x = -1 or -5", {"question": mmvet.question})
    assert scored.stats == {"score": 0.7}
    assert prompts[0].endswith("\nWhat is x in the equation? | -1  <AND>  -5 | x = -1 or -5 |")
    wild = get_benchmark("llava-wild").score("Mount Rushmore.", "A mountain.", {"caption": "A rock."})
    assert wild.stats == {"judge_reference": 8.0, "judge_model": 6.0}
    assert prompts[1].startswith("[Context]\nA rock.\n\n[Question]\n\n\n[Assistant 1]\nMount Rushmore.\n\n")
    assert "Please first output a single line containing only two values" in prompts[1]  # LLaVA's rule.json
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
    """Offline, an unknown id, or a loading-script dataset: one clear error, no traceback."""
    datasets = pytest.importorskip("datasets")

    def refuse(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found POPE.py")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    from vasink.cli import main
    from vasink.eval.data import HubDatasetError

    with pytest.raises(HubDatasetError, match=r"(?s)'lmms-lab/POPE'.*scripts are no longer.*--data PATH"):
        get_benchmark("pope").load()
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "1", "text": "yes"}) + "\n")
    assert main(["score", "--bench", "pope", "--answers", str(answers), "--data", "someone/pope-copy"]) == 2
    assert "could not load the hub dataset 'someone/pope-copy'" in capsys.readouterr().err


def test_answers_made_by_llavas_scripts_match_their_samples(tmp_path):
    """LLaVA's answer files name MME questions by image id + prompt, MMBench rows by index (+ round_id), MMVP
    unpadded."""
    from vasink.eval.score import score_answers

    def answers(name, lines):
        path = tmp_path / f"{name}-answers.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return path

    suffix = "\nAnswer the question using a single word or phrase."
    # llava_mme.jsonl's prompts: the question without " Please answer yes or no.", then the short-answer line
    mme = answers("mme", [
        {"question_id": "color/000000006723.jpg", "prompt": "Is the car red?" + suffix, "text": "Yes"},
        {"question_id": "color/000000006723.jpg", "prompt": "Is the car blue?" + suffix, "text": "Yes"},
        {"question_id": "code_reasoning/0020.png", "prompt": "Is the output 3? Please answer yes or no." + suffix,
         "text": "No"}])
    result = score_answers("mme", mme, str(fx.write_parquet(tmp_path / "mme.parquet", fx.rows_for("mme"))))
    # MME points: color 50 (acc 50 + acc+ 0: one of the image's two answers wrong), code_reasoning 200
    assert result["n"] == 3 and result["metrics"]["overall"]["color"] == 50.0
    assert result["metrics"]["overall"]["code_reasoning"] == 200.0

    # model_vqa_mmbench.py writes question_id = the row's index and round_id; mmbench.sh asks round 0 only
    # (the split holds the rotated copies); --all-rounds adds rounds > 0, which are left out of the score
    lines = [{"question_id": i, "round_id": 0, "text": t}
             for i, t in [(241, "A"), (1000241, "C"), (2000241, "A"), (5, "B"), (1000005, "A")]]
    lines.append({"question_id": 241, "round_id": 1, "text": "B"})
    data = str(fx.write_parquet(tmp_path / "mmbench.parquet", fx.rows_for("mmbench")))
    result = score_answers("mmbench", answers("mmbench", lines), data)
    assert result["n"] == 5 and result["skipped"] == 1
    assert result["metrics"]["overall"]["circular_accuracy"] == 0.5  # 241's third copy is wrong; 5 is right twice
    assert result["metrics"]["overall"]["accuracy"] == pytest.approx(4 / 5)

    mmvp = answers("mmvp", [{"question_id": 1, "text": "(a)"}, {"question_id": 2, "text": "(b)"}])
    result = score_answers("mmvp", mmvp, str(fx.write_parquet(tmp_path / "mmvp.parquet", fx.rows_for("mmvp"))))
    assert result["n"] == 2


# ------------------------------------------------------------------ hub datasets as `datasets` loads them

@pytest.mark.parametrize("bench", sorted(set(fx.HUB_LAYOUT) - {"gqa"}))
def test_every_benchmark_loads_its_hub_repository_through_load_dataset(bench, tmp_path, monkeypatch):
    """The dataset as the hub stores it (parquet written by `datasets`, Image features, README configs),
    loaded by `datasets.load_dataset(source, config, split=split)`: the call a run on the hub id makes."""
    datasets = pytest.importorskip("datasets")
    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    repo = fx.hub_repo(tmp_path / bench, bench)
    samples = get_benchmark(bench).load(str(repo))
    config, split = fx.HUB_LAYOUT[bench]
    assert calls == [((str(repo), config), {"split": split})]
    assert samples and all(s.prompt and s.id for s in samples)
    assert callable(samples[0].image)  # an Image feature, decoded when a batch needs it
    assert samples[0].load_image().size == (32, 32)


def test_gqa_hub_repository_joins_the_images_config(tmp_path):
    pytest.importorskip("datasets")
    import datasets

    images = (datasets.Features({"id": datasets.Value("string"), "image": datasets.Image()}),
              [{"id": "n288870", "image": fx.image_cell(3)}])
    repo = fx.hub_repo(tmp_path / "gqa", "gqa", extra={("testdev_balanced_images", "testdev"): images})
    sample = get_benchmark("gqa").load(str(repo))[0]
    assert sample.image_id == "n288870" and sample.load_image().getpixel((0, 0)) == (180, 120, 200)


# ------------------------------------------------------------------ MMBench: the dev split's own rotations

def test_mmbench_asks_each_row_once_as_llava_does(tmp_path):
    """LLaVA's model_vqa_mmbench.py: hint, question, "A. ..." options up to the first empty one, the
    letter instruction; the split's copies at index + k * 1e6 are the rotations (no second rotation)."""
    samples = get_benchmark("mmbench").load(str(fx.hub_repo(tmp_path / "mmbench", "mmbench")))
    assert [s.id for s in samples] == ["241", "1000241", "2000241", "5", "1000005"]
    assert [s.image_id for s in samples] == ["241", "241", "241", "5", "5"]  # index % 1_000_000
    assert samples[1].prompt == ("Which color is the sky?\nA. red\nB. green\nC. blue\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert samples[3].prompt.startswith("A photo of a door.\nIs the door open?\nA. yes\nB. no\n")


def test_mmbench_circular_accuracy_groups_by_index_mod_a_million(tmp_path):
    """A question counts only if every copy is right (MMBench's evaluator, lmms-eval's mmbench_evals.py)."""
    samples = load("mmbench", tmp_path)
    records = records_for("mmbench", samples, ["A", "C", "A", "B", "A"])  # 241: third copy wrong; 5: right
    metrics = arm_metrics(get_benchmark("mmbench"), records)["overall"]
    assert metrics["circular_accuracy"] == 0.5 and metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["n"] == 5.0  # one generation per row, not one per rotation of each row


# ------------------------------------------------------------------ MME: LLaVA-1.5's prompt, MME's parser

def test_mme_prompt_is_llavas_question_file(tmp_path):
    """llava_mme.jsonl: the question without " Please answer yes or no." plus the short-answer line."""
    samples = load("mme", tmp_path)
    assert samples[0].prompt == "Is the car red?\nAnswer the question using a single word or phrase."
    assert all("Please answer yes or no" not in s.prompt for s in samples)


def test_mme_accuracy_is_a_fraction_of_the_questions(tmp_path):
    samples = load("mme", tmp_path)
    metrics = arm_metrics(get_benchmark("mme"), records_for("mme", samples, ["Yes", "Yes", "No"]))["overall"]
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["color"] == 50.0 and metrics["code_reasoning"] == 200.0


def test_mme_answers_parse_as_mmes_tool():
    bench = get_benchmark("mme")
    meta = {"category": "color"}
    assert bench.score("no", "Nope, it is blue.", meta).parsed == "no"  # "no" in the first four characters
    assert bench.score("no", "I cannot tell.", meta).parsed == "other"


def test_vasink_scores_its_own_mme_records(tmp_path):
    """`vasink score --bench mme` on a vasink records file (id, raw, arm): ids are the samples' own."""
    from vasink.eval.score import score_answers

    data = str(fx.write_parquet(tmp_path / "mme.parquet", fx.rows_for("mme")))
    samples = get_benchmark("mme").load(data)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records_for("mme", samples, ["Yes", "No", "No"])))
    result = score_answers("mme", path, data)
    assert result["n"] == 3 and result["missing"] == 0
    assert result["metrics"]["overall"]["color"] == 200.0 and result["metrics"]["overall"]["accuracy"] == 1.0


# ------------------------------------------------------------------ CV-Bench, TextVQA, MMVP

def test_cvbench_ids_stay_unique_across_2d_and_3d(tmp_path):
    """idx restarts in CV-Bench's 2D and 3D files: both have an idx 0."""
    rows = fx.rows_for("cvbench")
    rows[1]["idx"] = rows[0]["idx"] = 0
    samples = get_benchmark("cvbench").load(str(fx.hub_repo(tmp_path / "cv", "cvbench", rows)))
    assert [s.id for s in samples] == ["2D-0", "3D-0"]


def test_textvqa_prompts_with_the_reference_ocr_tokens_by_default(tmp_path):
    """LLaVA-1.5's llava_textvqa_val_v051_ocr.jsonl: question, OCR line, short-answer line."""
    rows = fx.rows_for("textvqa")
    rows[0]["ocr_tokens"] = ["nokia", "connecting", "people"]
    rows.append({**rows[0], "question_id": 8, "ocr_tokens": []})
    with_ocr = load("textvqa", tmp_path, rows)
    assert with_ocr[0].prompt == ("What brand is this?\nReference OCR token: nokia, connecting, people\n"
                                  "Answer the question using a single word or phrase.")
    assert "Reference OCR token" not in with_ocr[1].prompt  # no tokens, no line
    plain = get_benchmark("textvqa-plain").load(str(tmp_path / "textvqa.parquet"))
    assert plain[0].prompt == "What brand is this?\nAnswer the question using a single word or phrase."
    assert "OCR" in get_benchmark("textvqa").description and "no OCR" in get_benchmark("textvqa-plain").description


def test_mmvp_lays_out_options_one_per_line(tmp_path):
    """lmms-eval's and Cambrian's MMVP prompt: "A. Open\\nB. Closed", not MMVP's raw "(a) Open (b) Closed"."""
    sample = load("mmvp", tmp_path)[0]
    assert sample.prompt == ("Are the butterfly's wings closer to being open or closed?\nA. Open\nB. Closed\n"
                             "Answer with the option's letter from the given choices directly.")


# ------------------------------------------------------------------ judged benchmarks

def test_mmhal_loads_the_response_template_with_its_images_folder(tmp_path):
    """The documented way: --data MMHal-Bench/response_template.json (images/ beside it, or --images)."""
    with pytest.raises(ValueError, match=r"--data response_template\.json"):
        get_benchmark("mmhal").load()
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ebd8d4e5.jpg").write_bytes(fx.png())
    row = {k: v for k, v in fx.rows_for("mmhal")[0].items() if k != "image"}
    (tmp_path / "response_template.json").write_text(json.dumps([row]))
    samples = get_benchmark("mmhal").load(str(tmp_path / "response_template.json"))
    check_images(samples)
    assert samples[0].image_path() == tmp_path / "images" / "ebd8d4e5.jpg"
    assert samples[0].meta["contents"] == "Fox, Snow"


def test_mmhal_rubric_and_threshold_are_eval_gpt4s(monkeypatch):
    """MMHal-Bench's eval_gpt4.py: 3 = not informative, no hallucination; 0-2 hallucination, 3-6 none; a
    reply with no (or several) "rating: N" counts 0."""
    from vasink.eval.benchmarks import judged

    assert "Rating: 3, not informative, no hallucination" in judged.MMHAL_PROMPT
    assert "Rating: 2, very informative, with hallucination" in judged.MMHAL_PROMPT
    bench = get_benchmark("mmhal")
    for reply, rating, clean in [("Short but right.\nRating: 3, not informative", 3, True),
                                 ("Invents a dog. Rating: 2", 2, False), ("I cannot rate this.", 0, False),
                                 ("Rating: 5 or maybe Rating: 1", 0, False)]:
        monkeypatch.setattr(judged, "ask", lambda prompt, max_tokens=256, reply=reply: reply)
        scored = bench.score("The fox is white.", "A white fox.", {"contents": "Fox"})
        assert (scored.parsed, scored.correct) == (rating, clean)


def test_llava_wild_joins_caption_lists_and_counts_unparsed_reviews_as_llava(tmp_path, monkeypatch):
    """LLaVA's eval_gpt_review_bench.py: captions joined by newlines; a review whose first line is not two
    scores is (-1, -1), and the means include it."""
    from vasink.eval.benchmarks import judged

    rows = fx.rows_for("llava-wild")
    rows[0]["caption"] = ["A rock with faces.", "Four presidents."]
    sample = load("llava-wild", tmp_path, rows)[0]
    assert sample.meta["caption"] == "A rock with faces.\nFour presidents."
    replies = iter(["8 6\nAssistant 2 is less detailed.", "Both answers are good."])
    monkeypatch.setattr(judged, "ask", lambda prompt, max_tokens=256, **options: next(replies))
    bench = get_benchmark("llava-wild")
    records = records_for("llava-wild", [sample, sample], ["A mountain.", "A mountain."])
    assert [r["stats"]["judge_model"] for r in records] == [6.0, -1.0]
    for i, r in enumerate(records):
        r["id"] = str(i)
    assert arm_metrics(bench, records)["overall"]["relative_score"] == pytest.approx(100 * 5 / 7)


def test_llava_pope_and_textvqa_answer_files_score(tmp_path):
    """model_vqa_loader.py's answers ({question_id, prompt, text}) for POPE's and TextVQA's question files."""
    from vasink.eval.score import score_answers

    pope = tmp_path / "pope-answers.jsonl"
    pope.write_text("".join(json.dumps({"question_id": i, "prompt": "...", "text": t}) + "\n" for i, t in
                            [(1, "Yes, there is a dog."), (2, "No, it is a cat."), (3, "No."), (4, "No")]))
    result = score_answers("pope", pope, str(fx.FIXTURES / "pope_llava.jsonl"), str(tmp_path))
    assert result["n"] == 4 and result["metrics"]["overall"]["accuracy"] == 0.75
    assert result["metrics"]["random"]["accuracy"] == 1.0  # "No, it is a cat." reads as no (eval_pope.py)

    textvqa = tmp_path / "textvqa-answers.jsonl"
    textvqa.write_text(json.dumps({"question_id": 7, "prompt": "...", "text": "Nokia"}) + "\n")
    data = str(fx.write_parquet(tmp_path / "textvqa.parquet", fx.rows_for("textvqa")))
    assert score_answers("textvqa", textvqa, data)["metrics"]["overall"]["vqa_accuracy"] == 1.0


S = "\nAnswer the question using a single word or phrase."
L = "\nAnswer with the option's letter from the given choices directly."


@pytest.mark.parametrize("bench, prompt", [
    ("pope", "Is there a dog in the image?" + S),  # LLaVA's llava_pope_test.jsonl
    ("vqav2", "How many dogs?" + S),  # llava_vqav2_mscoco_test-dev2015.jsonl
    ("vizwiz", "What is this?\nWhen the provided information is insufficient, respond with 'Unanswerable'." + S),
    ("scienceqa-img", "Context: Figure: Arctic fox.\nWhich animal's feet are also adapted for snow?\nA. fox\nB. camel"
     + L),  # llava_test_CQM-A.json with --single-pred-prompt
    ("seed", "How many towels?\nA. one\nB. two\nC. three\nD. four" + L),  # llava-seed-bench.jsonl
    ("cvbench", "How many cars are in the image? Select from the following choices.\n(A) 3\n(B) 2\n(C) 1" + L),
])
def test_prompts_are_llava_15s(bench, prompt, tmp_path):
    """The text after the image, as LLaVA-1.5's question files (scripts/v1_5/eval/*.sh) hold it."""
    assert load(bench, tmp_path)[0].prompt == prompt


def test_a_folder_with_a_plain_readme_is_still_a_question_folder(tmp_path):
    """Only a dataset card (README opening with its YAML block) or <config>/*.parquet make a hub copy."""
    (tmp_path / "README.md").write_text("# my POPE questions\n")
    (tmp_path / "questions.jsonl").write_text((fx.FIXTURES / "pope_llava.jsonl").read_text())
    assert len(get_benchmark("pope").load(str(tmp_path))) == 4


def test_benchmarks_say_when_their_number_is_not_the_papers():
    """VQAv2 and VizWiz: local val, while papers report EvalAI test-dev (docs/benchmarks.md)."""
    for name in ("vqav2", "vizwiz"):
        assert "test-dev" in get_benchmark(name).comparability
    assert "OCR" in get_benchmark("textvqa-plain").comparability and not get_benchmark("textvqa").comparability
    assert get_benchmark("gqa").comparability == ""


def test_mmbench_limit_keeps_every_rotated_copy_of_a_question(tmp_path):
    """--limit 1 on the dev split (copies stored after all originals): one question with all its copies."""
    rows = fx.rows_for("mmbench")
    rows = [rows[0], rows[3], rows[1], rows[4], rows[2]]  # the hub's order: originals first
    samples = get_benchmark("mmbench").load(str(fx.write_parquet(tmp_path / "mmb.parquet", rows)), limit=1)
    assert [s.id for s in samples] == ["241", "1000241", "2000241"]


def test_limit_keeps_mme_and_mmvp_pairs_whole(tmp_path):
    mme = get_benchmark("mme").load(str(fx.write_parquet(tmp_path / "mme.parquet", fx.rows_for("mme"))), limit=1)
    assert [s.subset for s in mme] == ["color", "color", "code_reasoning"]  # one image per category, both questions
    mmvp = get_benchmark("mmvp").load(str(fx.write_parquet(tmp_path / "mmvp.parquet", fx.rows_for("mmvp"))), limit=1)
    assert [s.id for s in mmvp] == ["001", "002"]
    assert len(get_benchmark("pope").load(str(fx.FIXTURES / "pope_llava.jsonl"), limit=1)) == 2  # one per split


def test_mmvet_asks_again_warmer_and_scores_zero_after_five_tries(monkeypatch):
    """MM-Vet's grader: the reply's first word is the score (0-1); otherwise ask again at a higher
    temperature, and count 0 when no try parses."""
    from vasink.eval.benchmarks import judged

    temperatures = []

    def grader(replies):
        replies = iter(replies)

        def ask(prompt, max_tokens=256, temperature=0.0):
            temperatures.append(temperature)
            return next(replies)
        return ask
    bench = get_benchmark("mmvet")
    monkeypatch.setattr(judged, "ask", grader(["The prediction is right.", "1.5", "0.6 because"]))
    assert bench.score("-1 <AND> -5", "x = -1", {"question": "What is x?"}).stats == {"score": 0.6}
    assert temperatures == [0.0, 0.5, 1.0]
    temperatures.clear()
    monkeypatch.setattr(judged, "ask", grader(["no score"] * 5))
    assert bench.score("2", "two", {"question": "How many?"}).stats == {"score": 0.0}
    assert temperatures == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_a_local_pope_report_does_not_carry_the_hubs_question_count(tmp_path):
    from vasink.eval import records
    from vasink.eval.report import build_report

    pope = get_benchmark("pope")
    assert "9,000" in pope.comparability_for("lmms-lab/POPE") and "mean of the three splits" in \
        pope.comparability_for(None)
    local = pope.comparability_for("coco_pope_random.jsonl")
    assert "9,000" not in local and "mean of the three splits' F1" in local
    samples = pope.load(str(fx.FIXTURES / "pope_llava.jsonl"))
    out = tmp_path / "run"
    from vasink.eval.runner import EvalSettings, run_description

    run = run_description(EvalSettings(bench="pope", data=str(fx.FIXTURES / "pope_llava.jsonl")), pope, None, "m")
    hashes = records.check_run(out, run, {"base": None, "var": {"tau": 1.0}})
    with records.RecordWriter(out / "records.jsonl") as writer:
        writer.write_batch(make_record(pope, s, arm, "yes", hashes[arm]) for s in samples for arm in hashes)
    report = build_report(out, resamples=50)
    assert "9,000" not in report["benchmark"]["comparability"]
    assert "9,000" not in (out / "report.md").read_text()
