"""benchmarks/train_step.py measures both throughputs in one run."""

import importlib.util
import json

import pytest

from conftest import REPO


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_train_step_benchmark_reports_ceiling_pipeline_and_ratio(loader, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_step", REPO / "benchmarks" / "train_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--models", "resnet18", "mobilenet_v2", "--resolutions", "16", "--batch-size", "16",
                          "--steps", "2", "--warmup", "1", "--repeats", "1", "--threads", "1", "--classes", "2",
                          "--data-dir", str(tmp_path), "--json", str(tmp_path / "results.json"), "--loader", loader])
    assert [(r["model"], r["resolution"]) for r in results] == [("resnet18", 16), ("mobilenet_v2", 16)]
    for row in results:
        assert row["loader"] == loader
        assert row["ceiling_images_per_s"] > 0 and row["pipeline_images_per_s"] > 0
        assert abs(row["ratio"] - row["pipeline_images_per_s"] / row["ceiling_images_per_s"]) < 0.002
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "ceiling img/s" in capsys.readouterr().out
