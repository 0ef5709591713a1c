"""benchmarks/train_step.py measures both throughputs in one run."""

import importlib.util
import json

from conftest import REPO


def test_train_step_benchmark_reports_ceiling_pipeline_and_ratio(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_step", REPO / "benchmarks" / "train_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--models", "resnet18", "mobilenet_v2", "--resolutions", "16", "--batch-size", "16",
                          "--steps", "2", "--warmup", "1", "--repeats", "1", "--threads", "1", "--classes", "2",
                          "--data-dir", str(tmp_path), "--json", str(tmp_path / "results.json")])
    assert [(r["model"], r["resolution"]) for r in results] == [("resnet18", 16), ("mobilenet_v2", 16)]
    for row in results:
        assert row["ceiling_images_per_s"] > 0 and row["pipeline_images_per_s"] > 0
        assert abs(row["ratio"] - row["pipeline_images_per_s"] / row["ceiling_images_per_s"]) < 0.002
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "ceiling img/s" in capsys.readouterr().out


def test_gpu_share_benchmark_runs_real_cells_for_each_slot_count(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    spec = importlib.util.spec_from_file_location("gpu_share", REPO / "benchmarks" / "gpu_share.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--images", "240", "--resolution", "32", "--batch-sizes", "16", "32", "--epochs", "1",
                         "--seeds", "1", "--per-gpu", "1", "2", "--gpus", "0", "--threads", "1",
                         "--tmp", str(tmp_path), "--json", str(tmp_path / "results.json")])
    assert [run["per_gpu"] for run in result["runs"]] == [1, 2]
    for run in result["runs"]:
        assert run["cells"] == 2 and run["statuses"] == {"ok": 2} and run["cells_per_hour"] > 0
        # no GPU here: the probes measure nothing, so with K = 2 every cell takes the whole (fake) device
        assert run["slots_by_batch_size"] == {16: run["per_gpu"], 32: run["per_gpu"]}
    assert all(probe["peak_mb"] is None for probe in result["probes"].values()) and result["device"] == "cpu"
    assert json.loads((tmp_path / "results.json").read_text())["runs"][1]["cells"] == 2
    assert "| cells per GPU (K) | cells |" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "its scratch folder is removed"
