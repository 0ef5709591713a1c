"""Local GPU claiming: concurrent jobs never share a device; locks die with their process."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from workflow.prepare import prepare_dataset

CLAIM = """
import json, os, sys, time
from workflow.devices import claim_gpu
start = time.time()
gpu = claim_gpu(log=lambda m: None)
claimed = time.time()
time.sleep(float(sys.argv[1]))
print(json.dumps({"gpu": gpu, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                  "claimed": claimed, "end": time.time()}))
"""


@pytest.fixture
def fake_gpus(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(TLSWEEP_GPUS="0,1", TLSWEEP_LOCK_DIR=str(tmp_path / "locks"), PYTHONPATH=str(REPO))
    return env


def start_claim(env, hold_s):
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(hold_s)], env=env, stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_get_different_devices_and_a_third_waits(fake_gpus):
    first, second = start_claim(fake_gpus, 3), start_claim(fake_gpus, 3)
    time.sleep(1.5)
    third = start_claim(fake_gpus, 0)
    results = [json.loads(p.communicate(timeout=60)[0]) for p in (first, second, third)]
    a, b, c = results
    assert {a["gpu"], b["gpu"]} == {"0", "1"}
    assert all(r["visible"] == r["gpu"] for r in results)
    assert max(a["claimed"], b["claimed"]) < min(a["end"], b["end"]), "the first two ran at the same time"
    assert c["claimed"] >= min(a["end"], b["end"]) - 0.05, "the third job waited for a free device"


def test_a_killed_job_releases_its_device(fake_gpus):
    fake_gpus["TLSWEEP_GPUS"] = "0"
    holder = start_claim(fake_gpus, 60)
    time.sleep(1.5)
    holder.kill()
    holder.wait()
    result = json.loads(start_claim(fake_gpus, 0).communicate(timeout=30)[0])
    assert result["gpu"] == "0"


def test_scheduler_devices_are_respected(fake_gpus):
    fake_gpus["CUDA_VISIBLE_DEVICES"] = "3"
    result = json.loads(start_claim(fake_gpus, 0).communicate(timeout=30)[0])
    assert result["gpu"] is None and result["visible"] == "3"


def test_two_real_training_jobs_claim_different_devices(fake_gpus, tmp_path):
    spec = {"source": "digits", "classes": [0, 1], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}
    prepare_dataset("d", spec, 16, tmp_path / "r16.h5", tmp_path / "r16.json")
    from test_training import make_cell

    jobs = []
    for i in range(2):
        cell = make_cell(id=f"d/resnet18/r16/job{i}", seed=i)
        cmd = [sys.executable, "-m", "workflow", "train", "--cell", json.dumps(cell), "--shard", str(tmp_path / "r16.h5"),
               "--out", str(tmp_path / f"job{i}")]
        jobs.append(subprocess.Popen(cmd, env=fake_gpus, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [job.communicate(timeout=300)[0] for job in jobs]
    assert all(job.returncode == 0 for job in jobs), logs
    claimed = sorted(line.split()[2] for log in logs for line in log.splitlines() if line.startswith("claimed GPU"))
    assert claimed == ["0", "1"]
