"""The benchmarks run end to end (tiny sizes) and report what BENCHMARKS.md records."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.pipeline  # they time the benchmarks


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_train_step_benchmark_reports_ceiling_pipeline_and_ratio(loader, tmp_path, capsys):
    bench = load_benchmark("train_step")
    results = bench.main(["--models", "resnet18", "timm:resnet10t", "--resolutions", "16", "--batch-size", "16",
                          "--steps", "2", "--warmup", "1", "--repeats", "1", "--threads", "1", "--classes", "2",
                          "--data-dir", str(tmp_path), "--json", str(tmp_path / "results.json"), "--loader", loader])
    assert [(r["model"], r["resolution"]) for r in results] == [("resnet18", 16), ("timm:resnet10t", 16)]
    for row in results:
        assert row["loader"] == loader and row["precision"] == "fp32"
        assert row["ceiling_images_per_s"] > 0 and row["pipeline_images_per_s"] > 0
        pipeline, ceiling = row["pipeline_images_per_s"], row["ceiling_images_per_s"]
        # the ratio is rounded to 3 places and the rates to 1, which counts when a busy machine makes them small
        rounding = 0.0005 + 0.05 * (1 + pipeline / ceiling) / ceiling
        assert abs(row["ratio"] - pipeline / ceiling) <= rounding * 1.01
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "ceiling img/s" in capsys.readouterr().out


def test_loader_benchmark_times_every_pipeline_and_prepares_cifar_sized_shards(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run = subprocess.run(
        [sys.executable, "benchmarks/loader.py", "--cores", "1", "--images", "300", "--size", "48", "--batch-size", "64",
         "--repeats", "2", "--prepare-images", "120", "--tmp", str(scratch), "--json", str(tmp_path / "results.json")],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["loader"]) == {"torchvision", "streamed shards", "in memory"}
    assert all(rate > 0 for rate in results["loader"].values())
    prepare = results["prepare"]
    assert prepare["images"] == 120 and prepare["total"] >= prepare["shards"] > 0
    assert "per core, streamed shards / torchvision" in run.stdout and "images/s/core" in run.stdout
    assert list(scratch.iterdir()) == [], "the shards are removed afterwards"


def test_gpu_share_benchmark_runs_real_cells_for_each_slot_count(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    bench = load_benchmark("gpu_share")
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


def test_job_start_benchmark_times_a_training_jobs_imports_against_torch():
    bench = load_benchmark("job_start")
    result = bench.main(["--repeats", "1"])
    assert {"workflow.cli", "workflow.train.cell", "workflow.track.watch"} <= set(result["modules"])
    for clock in ("wall", "cpu"):
        assert result[clock]["torch_s"] > 0 and result[clock]["train_s"] > 0


def test_features_benchmark_times_the_head_stage_on_both_paths(tmp_path, capsys):
    bench = load_benchmark("features")
    result = bench.main(["--models", "resnet18", "--batch-sizes", "64", "--optimizers", "sgd", "adam", "--epochs", "1",
                         "--tmp", str(tmp_path), "--json", str(tmp_path / "results.json")])
    assert [row["cell"].split("/")[-1] for row in result["cells"]] == [
        "bs64-lr1e-2-sgd-all-s0-wdigits-0to4", "bs64-lr1e-2-adam-all-s0-wdigits-0to4"]
    assert set(result["features_jobs"]) == {"resnet18"} and result["features_jobs"]["resnet18"]["images"] > 0
    assert all(row["today_cpu_s"] > 0 and row["features_cpu_s"] > 0 for row in result["cells"])
    assert all(row["max_relative_difference"] <= 1e-6 for row in result["cells"])  # the same histories
    total = sum(row["features_cpu_s"] for row in result["cells"]) + result["features_jobs"]["resnet18"]["cpu_s"]
    assert result["features_once_cpu_s"] == pytest.approx(total, abs=0.02)
    assert result["ratio"] == pytest.approx(result["today_cpu_s"] / result["features_once_cpu_s"], abs=0.06)
    assert json.loads((tmp_path / "results.json").read_text()) == result
    assert "| today: the backbone every epoch |" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "its scratch folder is removed"


def test_ranking_benchmark_estimates_the_batch_size_study_from_its_per_image_costs(tmp_path):
    bench = load_benchmark("ranking")
    out = bench.main(["--model", "resnet18", "--resolution", "16", "--batch-size", "4", "--steps", "1",
                      "--threads", "1", "--score-fraction", "0.002", "--finetune-epochs", "100", "30",
                      "--json", str(tmp_path / "ranking.json")])
    costs = out["per_image"]
    assert costs["dim"] == 512 and costs["features_s_per_image"] > 0 and costs["train_s_per_image"] > 0
    for estimate, epochs in zip(out["batch_size_study"], [100, 30]):
        forward, train = costs["features_s_per_image"], costs["train_s_per_image"]
        # per dataset: 60,000 images once to rank; 5 cells of 20 head epochs (forward), `epochs` of training,
        # validation after every epoch and the test once to fine-tune
        rank = 2 * 60_000 * forward + sum(sum(parts.values()) for parts in costs["score_s"].values())
        tune = 2 * 5 * (20 * 45_000 * forward + epochs * 45_000 * train + (20 + epochs) * 5_000 * forward
                        + 10_000 * forward)
        assert estimate["rank_s"] == pytest.approx(rank, rel=1e-3, abs=0.5)
        assert estimate["fine_tune_s"] == pytest.approx(tune, rel=1e-3, abs=0.5)
        assert estimate["cells"] == 10 and estimate["finetune_epochs"] == epochs
    assert json.loads((tmp_path / "ranking.json").read_text()) == out
