"""Every command answers a bad input in one line on stderr that names the flag or the file: exit code not 0,
no traceback, nothing loaded first. In-process through ``vasink.cli.main``, plus two real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vasink.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
POPE = str(FIXTURES / "pope_llava.jsonl")


def cuda_missing() -> bool:
    import torch

    return not torch.cuda.is_available()


# (command line with {file} / {dir} / {empty} / {corrupt} / {missing} placeholders, text the line must hold)
CASES = [
    ("eval --bench organism-pope --out {file}", "--out"),
    ("sweep --bench organism-pope --out {file}", "--out"),
    ("demo --out {file}", "--out"),
    ("sinks --out {file}", "--out"),
    ("organism train --out {file}", "--out"),
    ("organism train --out {file}/run", "--out"),
    ("score --bench pope --data " + POPE + " --answers {answers} --out {dir}", "--out"),
    ("score --bench pope --data " + POPE + " --answers {missing}", "--answers"),
    ("sinks --image {empty} --question what --out {dir}/o", "empty.png"),
    ("attention --image {corrupt} --question what --out {dir}/o", "corrupt.png"),
    ("sinks --device gpu --out {dir}/o", "--device"),
    ("eval --bench organism-pope --sink-dims abc", "--sink-dims"),
    ("sweep --bench organism-pope --sink-dims 5,x", "--sink-dims"),
    ("sinks --sink-dims abc", "--sink-dims"),
    ("eval --bench organism-pope --resamples 0", "--resamples"),
    ("report {dir} --resamples 0", "--resamples"),
    ("eval --bench organism-pope --limit 0", "--limit"),
    ("eval --bench organism-pope --batch-size -1", "--batch-size"),
    ("heads --limit 0", "--limit"),
    ("demo --seed -3", "--seed"),
    ("demo --scenes 0", "--scenes"),
    ("organism train --out {dir}/t --minutes 0", "--minutes"),
    ("organism train --out {dir}/t --recipe {missing}", "no-answers.jsonl does not exist"),
    ("organism train --out {dir}/t --recipe {answers}", "answers.jsonl holds no recipe"),
    ("attention --layers two", "--layers"),
    ("eval --bench organism-pope --preset everything", "--preset"),
    ("eval --bench popee", "popee"),
    ("eval --model {dir}/no-such-model --bench organism-pope --out {dir}/o", "does not exist"),
    ("sinks --model {dir}/no-such-model --out {dir}/o", "does not exist"),
    ("heads --model nobody/no-such-model --out {dir}/o", "not in the local Hugging Face cache"),
    ("eval --model {file} --bench organism-pope --out {dir}/o", "this is a file"),
    ("eval --bench organism-pope --rho 2 --out {dir}/o", "--rho 2"),
    ("eval --bench organism-pope --tau -1 --out {dir}/o", "--tau -1"),
    ("sweep --bench organism-pope --rho 0.5,abc --out {dir}/o", "--rho"),
    ("sweep --bench organism-pope --p 0.3,1.5 --out {dir}/o", "--p 1.5"),
    ("attention --p 3 --out {dir}/o", "--p 3"),
    ("ablate --base-records {dir} --out {dir}/o", "--base-records"),
    ("sinks --image {dir} --question what --out {dir}/o", "this is a folder"),
    ("sinks --question what\udce9colour --out {dir}/o", "--question: not valid UTF-8 text (byte e9"),
]
if cuda_missing():  # only testable where torch has no GPU
    CASES += [("eval --bench organism-pope --device cuda --out {dir}/o", "--device cuda"),
              ("sinks --device cuda:0 --out {dir}/o", "--device cuda:0")]


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # default output folders land here, if anything is made at all
    (tmp_path / "a-file.txt").write_text("not a folder")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (tmp_path / "answers.jsonl").write_text(json.dumps({"question_id": 1, "text": "yes"}) + "\n")
    (tmp_path / "d").mkdir()
    return {"file": tmp_path / "a-file.txt", "dir": tmp_path / "d", "empty": tmp_path / "empty.png",
            "corrupt": tmp_path / "corrupt.png", "answers": tmp_path / "answers.jsonl",
            "missing": tmp_path / "no-answers.jsonl"}


def assert_one_line(code: int, err: str, must_hold: str) -> str:
    """One line on stderr besides a progress bar (tqdm's ``\\r``-redrawn line, ``NN%|``) holding ``must_hold``."""
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert code != 0, err
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert must_hold in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("line, must_hold", CASES, ids=[c[0].split(" --")[0] + ": " + c[1] for c in CASES])
def test_a_bad_input_is_one_line_naming_the_flag_or_file(line, must_hold, paths, capsys, monkeypatch):
    from vasink.eval import loading

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")
    monkeypatch.setattr(loading, "load_model", no_loading)
    argv = [part.format(**paths) for part in line.split()]
    code = main(argv)
    assert_one_line(code, capsys.readouterr().err, must_hold)


@pytest.mark.parametrize("line, resumable", [("eval --bench organism-pope --limit 1 --out {dir}/run", True),
                                             ("sinks --out {dir}/sinks", False)])
def test_ctrl_c_is_one_line_that_says_whether_the_same_command_resumes(line, resumable, paths, capsys, monkeypatch):
    from vasink.eval import loading

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(loading, "load_model", interrupted)
    code = main([part.format(**paths) for part in line.split()])
    assert code == 130
    message = assert_one_line(code, capsys.readouterr().err, "interrupted")
    assert ("run the same command again to resume" in message) == resumable


def test_a_hub_benchmark_without_datasets_names_the_eval_extra(paths, capsys, monkeypatch):
    from vasink.eval import loading

    monkeypatch.setitem(sys.modules, "datasets", None)  # as in the quick start's environment: `import datasets` fails
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    code = main(["eval", "--bench", "pope", "--limit", "1", "--out", str(paths["dir"] / "o")])
    line = assert_one_line(code, capsys.readouterr().err, 'pip install -e ".[eval]"')
    assert "lmms-lab/POPE" in line and "pip install datasets" in line and "--data" in line


def test_help_and_version_exit_zero(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("vasink ")
    assert main(["--help"]) == 0
    assert "eval" in capsys.readouterr().out


def test_in_a_real_process(paths):
    """What a person sees: the console entry point, with whatever imports and warnings it brings."""
    args = ["sinks", "--image", str(paths["empty"]), "--question", "what", "--out", str(paths["dir"] / "o")]
    result = subprocess.run([sys.executable, "-m", "vasink.cli", *args], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.stdout == ""
    assert_one_line(result.returncode, result.stderr, "empty.png")


HEAVY = ("torch", "transformers", "matplotlib")


def test_the_parser_imports_nothing_heavy_and_import_vasink_reaches_every_subpackage():
    """``vasink --help`` must not wait for torch (benchmarks/bench_cli_startup.py times it); names and
    subpackages are still there after a bare ``import vasink``."""
    code = "\n".join([
        "import sys, vasink.cli",
        "assert vasink.cli.main(['--help']) == 0",
        f"print([m for m in {HEAVY + ('numpy',)!r} if m in sys.modules])",  # vasink --help: names only
        "vasink.cli.build_parser()",
        f"print([m for m in {HEAVY!r} if m in sys.modules])",  # every command's flags
        "import vasink",
        "import vasink.attention",  # imports the module vasink.redistribute: the name stays the function
        "from vasink import redistribute",
        "print(callable(vasink.analysis.image_grids), callable(vasink.organism.load), vasink.VARConfig.__name__,",
        "      type(redistribute).__name__, type(vasink.redistribute).__name__)",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    top_help, heavy, reached = result.stdout.splitlines()[-3:]
    assert top_help == "[]", f"imported by vasink --help: {top_help}"
    assert heavy == "[]", f"imported while building the parser: {heavy}"
    assert reached == "True True VARConfig function function"


def test_a_warning_is_one_line_without_its_source(paths, capsys, monkeypatch):
    import warnings

    from vasink.eval import loading

    def warns_then_fails(*args, **kwargs):
        warnings.warn("the shipped organism has no visual sink token", UserWarning)
        raise ValueError("--sink-dims: stop here")
    monkeypatch.setattr(loading, "load_model", warns_then_fails)
    assert main(["eval", "--bench", "organism-pope", "--limit", "1", "--out", str(paths["dir"] / "w")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: the shipped organism has no visual sink token", "vasink: error: --sink-dims: stop here"]


def test_a_corrupt_image_in_an_eval_folder_is_one_line_and_keeps_what_was_written(tmp_path, capsys, monkeypatch):
    from conftest import SINK_DIMS, tiny_llava, tiny_processor

    from vasink import VARConfig
    from vasink.eval import loading

    images = tmp_path / "images"
    images.mkdir()
    Image = pytest.importorskip("PIL.Image")
    Image.new("RGB", (28, 28), (200, 30, 30)).save(images / "COCO_val2014_000000000042.jpg")
    (images / "COCO_val2014_000000000073.jpg").write_bytes(b"")  # samples 3 and 4: an empty file
    loaded = loading.LoadedModel(tiny_llava(num_layers=3), tiny_processor(), "tiny", VARConfig(sink_dims=SINK_DIMS,
                                                                                               tau=3.0))
    monkeypatch.setattr(loading, "load_model", lambda *args, **kwargs: loaded)
    out = tmp_path / "run"
    code = main(["eval", "--bench", "pope", "--data", POPE, "--images", str(images), "--var", "off",
                 "--batch-size", "2", "--out", str(out), "--no-report"])
    message = assert_one_line(code, capsys.readouterr().err, "COCO_val2014_000000000073.jpg")
    assert "empty or corrupt" in message
    assert len((out / "records.jsonl").read_text().splitlines()) == 2  # the first batch is kept


def test_model_folders_that_can_load_pass_the_check(tmp_path):
    from vasink.eval.loading import check_model_spec

    for marker in ("config.json", "organism.json"):  # a saved Hugging Face model; a `vasink organism train` run
        folder = tmp_path / marker.split(".")[0]
        folder.mkdir()
        (folder / marker).write_text("{}")
        check_model_spec(str(folder))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        check_model_spec(str(tmp_path))


def test_an_image_without_read_permission_is_not_called_empty_or_corrupt(paths, capsys, monkeypatch):
    import vasink.images
    from vasink.eval.registry import Sample
    from vasink.eval.runner import _load_image

    photo = paths["dir"] / "photo.png"
    photo.write_bytes(b"\x89PNG")

    def denied(source, **kwargs):  # chmod 000 does not stop root, who runs this suite in CI
        raise PermissionError(13, "Permission denied", str(source))
    monkeypatch.setattr(vasink.images, "load_image", denied)
    code = main(["sinks", "--image", str(photo), "--question", "what", "--out", str(paths["dir"] / "o")])
    line = assert_one_line(code, capsys.readouterr().err, "photo.png: no permission to read")
    assert "corrupt" not in line
    with pytest.raises(PermissionError, match="photo.png: no permission to read this image") as error:
        _load_image(Sample(id="7", prompt="q", target="yes", image=photo))
    assert "corrupt" not in str(error.value)
