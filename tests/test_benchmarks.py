"""The benchmark's comparison points compute the same thing as vasink's paths (checked before any timing)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_var  # noqa: E402


@pytest.mark.parametrize("decode", [False, True])
def test_layer_paths_agree_with_released_style(decode):
    workload = bench_var.LayerWorkload("tiny", batch=2, visual=24, total=70, decode=decode, visual_sinks=1)
    run = bench_var.layer_runner(workload, torch.device("cpu"), torch.float32)
    outputs = {impl: run(impl) for impl in bench_var.IMPLEMENTATIONS}
    verdict = bench_var.agree(outputs, bench_var.IMPLEMENTATIONS)
    assert all(verdict.values()), verdict
    # the workload is one where VAR acts: otherwise agreement would prove nothing
    assert not torch.allclose(outputs["fast"], outputs["stock"], atol=1e-4)


def test_agree_flags_a_wrong_path():
    outputs = {"stock": torch.zeros(3), "reference": torch.ones(3), "fast": torch.ones(3) * 1.01}
    assert bench_var.agree(outputs, ("stock", "fast")) == {"stock": True, "fast": False}


def test_bench_peers_times_every_method_against_stock_in_one_run(tmp_path, capsys):
    """The peers' cost benchmark on its tiny workload: one row per method, stock's ratio 1, every method
    timed on the same prompts (PAI's second pass without the image goes through the sink planting hook)."""
    import json

    import bench_peers

    torch.set_num_threads(1)
    out = tmp_path / "rows.json"
    assert bench_peers.main(["--workload", "tiny", "--repeats", "1", "--new-tokens", "2", "--no-memory",
                             "--json", str(out)]) == 0
    rows = {row["method"]: row for row in json.loads(out.read_text())}
    assert list(rows) == list(bench_peers.METHODS)
    assert rows["stock"]["time_ratio_to_stock"] == 1.0 and rows["stock"]["tokens_changed"] == 0
    assert all(row["median_s"] > 0 and row["tokens"] == 2 * 2 for row in rows.values())
    assert "pai-attention" in capsys.readouterr().out
