"""Several cells per GPU: slot arithmetic, the memory probe and its cache, and a real Snakemake run
whose training jobs share (fake) GPUs by slots."""

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import REPO, make_cell, snakemake, tiny_study, write_cell_study, write_config
from test_workflow import job_counts
from workflow.study.config import SCHEMA, load_config
from workflow.data.batches import split_bytes
from workflow.data.prepare import prepare_dataset
from workflow.gpu.probe import measure
from workflow.data.shards import shard_files
from workflow.gpu.slots import (
    SlotSettings, cell_slots, memory_fraction, probe_key, probe_name, probe_spec, slots_needed, split_mb,
)
from workflow.study.grid import build_study


def study_of(config: dict):
    """The study of a config dict, validated (defaults filled in) as the Snakefile does."""
    from snakemake.utils import validate

    config = json.loads(json.dumps(config))
    validate(config, str(SCHEMA))
    return build_study(config)

# --- slot arithmetic -------------------------------------------------------------------------------


@pytest.mark.parametrize("per_gpu", [2, 3, 4, 8])
@pytest.mark.parametrize("headroom", [1.0, 0.9, 0.75])
def test_slots_are_the_ceiling_of_peak_over_a_slots_memory(per_gpu, headroom):
    device = 80_000.0
    slot = device * headroom / per_gpu
    for peak in [1.0, slot * 0.5, slot, slot * 1.01, slot * 2.5, device * headroom * 0.999]:
        assert slots_needed(peak, device, per_gpu, headroom) == min(per_gpu, max(1, math.ceil(peak / slot - 1e-9)))


def test_more_than_a_device_unmeasured_or_one_slot_per_gpu_take_every_slot():
    assert slots_needed(90_000, 80_000, 4, 0.9) == 4  # needs more than the whole device: still K
    assert slots_needed(None, 80_000, 4, 0.9) == 4  # nothing measured (a probe without a GPU)
    assert slots_needed(100, None, 4, 0.9) == 4
    assert slots_needed(100, 80_000, 1, 0.9) == 1  # K = 1: every job has the whole device


def test_splits_kept_on_the_device_count_against_the_share():
    # 4 slots of 18,000 MB (80,000 x 0.9 / 4); training's peak 10,000 MB
    assert slots_needed(10_000, 80_000, 4, 0.9) == 1
    # the three splits (8,000 MB) fit half of one slot (9,000) and with the peak the slot: 18,000 <= 18,000
    assert slots_needed(10_000, 80_000, 4, 0.9, [7_000, 500, 500], memory_share=0.5) == 1
    # 9,000 MB of splits still fit half a slot, but with the peak not the slot: two
    assert slots_needed(10_000, 80_000, 4, 0.9, [7_000, 1_000, 1_000], memory_share=0.5) == 2
    # streamed splits (memory_share 0) take nothing
    assert slots_needed(10_000, 80_000, 4, 0.9, [70_000, 1_000, 1_000], memory_share=0.0) == 1
    # a train split larger than half of any share is streamed, only val and test stay
    assert slots_needed(17_000, 80_000, 4, 0.9, [70_000, 500, 500], memory_share=0.5) == 1
    assert memory_fraction(1, SlotSettings(per_gpu=4, headroom=0.9)) == pytest.approx(0.225)


def test_probe_spec_names_what_drives_peak_memory():
    study = build_study(load_config(REPO / "config.yaml"))  # the default study: MobileNetV2, RMSprop(momentum 0)
    names = sorted({probe_name(probe_spec(cell)) for cell in study.cells.values()})
    assert names == [f"mobilenet_v2-r160-bs{bs}-gap-opt1-auto-eval256" for bs in (128, 256, 32, 512, 64)]
    cell = next(iter(study.cells.values()))

    def changed(cell, optimizer=None, **training):
        return replace(cell, optimizer=optimizer or cell.optimizer, training=replace(cell.training, **training))

    assert probe_spec(changed(cell, momentum=0.9))["optimizer_states"] == 2
    sgd = changed(cell, "sgd", momentum=0.9)
    assert probe_spec(sgd)["optimizer_states"] == 1  # momentum 0.9
    sgd = changed(sgd, momentum=0.0)
    assert probe_spec(sgd)["optimizer_states"] == 0
    stages = [{**stage, "optimizer": "adam"} if stage["name"] == "head" else stage for stage in sgd.training.stages]
    assert probe_spec(changed(sgd, stages=stages))["optimizer_states"] == 2
    assert probe_key("2.14.0", ["NVIDIA H100 80GB HBM3"] * 2) == "torch2.14.0-NVIDIA-H100-80GB-HBM3"
    assert probe_key("2.14.0", []) == "torch2.14.0-nogpu"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    spec = {"source": "digits", "classes": [0, 1, 2], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}
    prepare_dataset("d", spec, 16, folder / "r16.h5", folder / "r16.json")
    return folder


def test_split_sizes_from_manifest_and_shard_match_what_loading_counts(digits):
    expected = [split_bytes(shard_files(digits / "r16.json"), split) / 2**20 for split in ("train", "val", "test")]
    assert split_mb(digits / "r16.json") == pytest.approx(expected)
    assert split_mb(digits / "r16.h5") == pytest.approx(expected)


def test_cell_slots_read_the_cells_probe(digits, tmp_path):
    config = tiny_study()
    cell = next(c for c in study_of(config).grid_cells if c.batch_size == 32)
    settings = SlotSettings(per_gpu=4, headroom=0.8, probe_dir=tmp_path)
    assert cell_slots(cell, digits / "r16.json", settings) == 4, "no probe yet: the whole device"
    probe = tmp_path / f"{probe_name(probe_spec(cell))}.json"
    probe.write_text(json.dumps({"peak_mb": None, "device_mb": None}))
    assert cell_slots(cell, digits / "r16.json", settings) == 4, "a probe without a GPU: the whole device"
    probe.write_text(json.dumps({"peak_mb": 2500.0, "device_mb": 10_000.0}))  # 2,000 MB per slot
    assert cell_slots(cell, digits / "r16.json", settings) == 2
    assert cell_slots(cell, digits / "r16.json", SlotSettings(per_gpu=1, probe_dir=tmp_path)) == 1


# --- the probe ---------------------------------------------------------------------------------------


def test_probe_steps_run_on_the_cpu_but_measure_nothing():
    spec = {"model": "mobilenet_v2", "resolution": 32, "batch_size": 4, "head": "mlp", "optimizer_states": 2,
            "precision": "auto", "eval_batch_size": 8}
    record = measure(spec, torch.device("cpu"), steps=2)
    assert record["steps"] == 2 and record["seconds"] > 0
    assert record["peak_mb"] is None and record["device_mb"] is None and record["precision"] == "fp32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probe_measures_peak_memory_on_a_gpu():
    spec = {"model": "mobilenet_v2", "resolution": 160, "batch_size": 64, "head": "gap", "optimizer_states": 2,
            "precision": "auto", "eval_batch_size": 256}
    small = measure({**spec, "batch_size": 16}, torch.device("cuda"), steps=2)
    large = measure(spec, torch.device("cuda"), steps=2)
    assert 0 < small["peak_mb"] < large["peak_mb"] < large["device_mb"]
    assert large["reserved_mb"] >= large["peak_mb"]


CAP = """
import json, torch
from workflow.data.batches import device_memory
from workflow.gpu.devices import cap_memory
cap_memory(0.25, log=lambda m: None)
total = torch.cuda.get_device_properties(0).total_memory
seen = device_memory(torch.device("cuda"))
try:
    torch.empty(int(total * 0.3), dtype=torch.uint8, device="cuda")
    over = "allocated"
except torch.OutOfMemoryError:
    over = "oom"
print(json.dumps({"share": seen / total, "over": over}))
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_capped_job_runs_out_of_memory_beyond_its_share_and_loads_splits_within_it():
    result = subprocess.run([sys.executable, "-c", CAP], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["share"] == pytest.approx(0.25, abs=0.01) and record["over"] == "oom"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_probe_command_on_a_machine_without_a_gpu_records_that(tmp_path):
    cell = make_cell(batch_size=8, optimizer="rmsprop", training={"momentum": 0.0})
    spec = probe_spec(cell)
    assert spec == {"model": "resnet18", "resolution": 16, "batch_size": 8, "head": "gap", "optimizer_states": 1,
                    "precision": "auto", "eval_batch_size": 256}
    study_file = write_cell_study(cell, tmp_path / "study.yaml")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(TLSWEEP_GPUS="0", TLSWEEP_LOCK_DIR=str(tmp_path / "locks"), PYTHONPATH=str(REPO))
    out = tmp_path / "probe.json"
    result = subprocess.run([sys.executable, "-m", "workflow", "probe", "--configfile", str(study_file),
                             "--probe", probe_name(spec), "--out", str(out)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("claimed GPU 0 (lock "), "the probe takes a whole device"
    record = json.loads(out.read_text())
    assert record["spec"] == spec and record["device"] == "cpu" and record["torch"] == torch.__version__
    assert record["peak_mb"] is None and record["device_mb"] is None and "no CUDA device" in record["note"]


# --- Snakemake ---------------------------------------------------------------------------------------


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """Two fake GPUs for the jobs Snakemake starts (and for probe_key here), a private lock folder."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("TLSWEEP_GPUS", "0,1")
    monkeypatch.setenv("TLSWEEP_LOCK_DIR", str(tmp_path / "locks"))


def slot_study(name: str, per_gpu: int = 2) -> dict:
    config = tiny_study(name)
    config["resources"]["slots_per_gpu"] = per_gpu
    return config


@pytest.mark.pipeline
def test_probes_are_cached_across_studies(tmp_path, fake_gpus):
    first = write_config(tmp_path / "first.yaml", slot_study("first"))
    plan = snakemake(tmp_path, "-n", "--configfile", str(first))
    assert job_counts(plan.stdout) == {"plan": 2, "shard": 2, "manifest": 2, "probe_memory": 4, "train": 4,
                                       "train_upstream": 1, "pretrain_tag": 1, "aggregate": 1, "charts": 1,
                                       "export_index": 1, "all": 1}  # pretrain_tag: the head stages' features
    probes = Path("results") / "probes" / probe_key()  # relative to the working directory, as the rule says
    study = study_of(slot_study("first"))
    files = sorted({str(probes / f"{probe_name(probe_spec(c))}.json") for c in study.cells.values()})
    assert len(files) == 4  # batch size 32/64 x SGD (1 state) / Adam (2), the pretrain cell shares one
    snakemake(tmp_path, "--cores", "2", *files, "--configfile", str(first))  # only the probes
    record = json.loads((tmp_path / files[0]).read_text())
    assert probe_name(record["spec"]) == Path(files[0]).stem
    # on a machine without a GPU (fake devices here) the probe measures nothing
    assert (record["device"] == "cpu") == (record["peak_mb"] is None)
    second = write_config(tmp_path / "second.yaml", slot_study("second"))
    counts = job_counts(snakemake(tmp_path, "-n", "--configfile", str(second)).stdout)
    assert "probe_memory" not in counts and counts["train"] + counts["train_upstream"] == 5, \
        "another study reuses the probes"
    third = slot_study("third")
    third["grid"]["batch_size"].append(16)
    plan = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path / "third.yaml", third))).stdout
    assert job_counts(plan)["probe_memory"] == 2 and plan.count("-bs16-gap-opt") >= 2, "only the new combinations"


def intervals(workdir: Path, study: str) -> dict[str, dict]:
    """Per cell: the GPU and slots its job claimed, the claim time and the end (its log's last write)."""
    jobs = {}
    logs = workdir / "results" / study / "logs"
    for log in [*(logs / "train").rglob("*.log"), *(logs / "train_upstream").rglob("*.log")]:
        text = log.read_text()
        claim = re.search(r"^claimed GPU (\S+) \((.*)\) at ([\d.]+)$", text, re.M)
        need = re.search(r"^needs (\d) of the (\d) slots", text, re.M)
        assert claim and need and "done: status ok" in text, text[-2000:]
        cell = str(log.relative_to(log.parents[3]))[:-len(".log")]
        jobs[cell] = {"gpu": claim.group(1), "what": claim.group(2), "start": float(claim.group(3)),
                      "end": log.stat().st_mtime, "slots": int(need.group(1)), "log": text}
    return jobs


@pytest.mark.pipeline
def test_cells_share_gpus_within_the_slots_snakemake_grants(tmp_path, fake_gpus):
    """Two fake GPUs of 2 slots, but --resources gpu_slots=2: Snakemake runs at most 2 slots' worth of
    cells at once (the locks would allow 4). Probes seeded in the cache (this machine has no GPU to
    measure): batch size 32 needs 1 slot, 64 (the pretrain cell's size too) the whole device."""
    config = slot_study("shared")
    config["pretrain"]["base"]["training"]["stages"][0]["epochs"] = 1
    config["training"]["stages"][1]["epochs"] = 1
    configfile = write_config(tmp_path / "shared.yaml", config)
    study = study_of(config)
    probes = tmp_path / "results" / "probes" / probe_key()
    probes.mkdir(parents=True)
    for cell in study.cells.values():
        spec = probe_spec(cell)
        peak = 300.0 if cell.batch_size == 32 else 600.0  # slots of 1000 x 0.9 / 2 = 450 MB
        (probes / f"{probe_name(spec)}.json").write_text(json.dumps(
            {"spec": spec, "device": "seeded", "peak_mb": peak, "device_mb": 1000.0}))
    snakemake(tmp_path, "--cores", "2", "--resources", "gpu_slots=2", "--configfile", str(configfile))
    (log,) = (tmp_path / ".snakemake" / "log").glob("*.snakemake.log")
    log = log.read_text()  # the rule blocks: Snakemake's log file has them, its console not
    assert "probe_memory" not in log

    granted = {}  # what Snakemake reserved per cell: its gpu_slots resource
    for block in re.split(r"rule train(?:_upstream)?:", log)[1:]:
        cell = re.search(r"(?:cells|upstream)/(\S+)/metrics\.json", block).group(1)
        granted[cell] = int(re.search(r"gpu_slots=(\d+)", block).group(1))
    jobs = intervals(tmp_path, "shared")
    assert len(jobs) == 5 and granted == {cell: job["slots"] for cell, job in jobs.items()}
    assert {cell: job["slots"] for cell, job in jobs.items() if "/bs32-" in cell} == {
        cell: 1 for cell in jobs if "/bs32-" in cell} and sum(job["slots"] == 2 for job in jobs.values()) == 3

    def running(t):
        return [job for job in jobs.values() if job["start"] <= t < job["end"]]

    for job in jobs.values():
        now = running(job["start"])
        assert sum(j["slots"] for j in now) <= 2, "never more slots than --resources gpu_slots=2"
        for gpu in ("0", "1"):
            assert sum(j["slots"] for j in now if j["gpu"] == gpu) <= 2
        if job["slots"] == 2:
            assert len(now) == 1 and job["what"].startswith("whole device, 2 of 2 slots")
        else:  # its share: 1 of 2 slots x 0.9; applied only where the fake device is a real one
            assert ("no CUDA device: memory share 0.450 not applied" in job["log"]
                    or "capped CUDA memory at 0.450 of the device" in job["log"])
    small = [job for cell, job in jobs.items() if "/bs32-" in cell]
    assert small[0]["gpu"] == small[1]["gpu"], "the fullest device that fits comes first"
    assert max(j["start"] for j in small) < min(j["end"] for j in small), "the two 1-slot cells shared one GPU"
    assert sorted(re.search(r"slots: (\d)", j["what"]).group(1) for j in small) == ["0", "1"]
