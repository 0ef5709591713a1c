"""Local GPU claiming: concurrent jobs never share a device; locks die with their process."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from workflow.data.prepare import prepare_dataset

CLAIM = """
import json, os, sys, time
from workflow.gpu.devices import claim_gpu
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


@pytest.mark.pipeline
def test_two_real_training_jobs_claim_different_devices(fake_gpus, tmp_path):
    spec = {"source": "digits", "classes": [0, 1], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}
    prepare_dataset("d", spec, 16, tmp_path / "r16.h5", tmp_path / "r16.json")
    from conftest import make_cell, train_command

    jobs = []
    for i in range(2):
        cmd = train_command(make_cell(seed=i), tmp_path / "r16.json", tmp_path / f"job{i}")
        jobs.append(subprocess.Popen(cmd, env=fake_gpus, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [job.communicate(timeout=300)[0] for job in jobs]
    assert all(job.returncode == 0 for job in jobs), logs
    claimed = sorted(line.split()[2] for log in logs for line in log.splitlines() if line.startswith("claimed GPU"))
    assert claimed == ["0", "1"]


# Slots: K jobs per device (resources.slots_per_gpu), each holding s of its K slots.

CLAIM_SLOTS = """
import json, os, sys, time
from workflow.gpu import devices
hold_s, slots, per_gpu = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
start = time.time()
gpu = devices.claim_gpu(log=lambda m: None, slots=slots, slots_per_gpu=per_gpu, poll_s=0.1)
claimed = time.time()
print(json.dumps({"gpu": gpu, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "slots": slots,
                  "held": devices.held_slots(devices._held_locks), "start": start, "claimed": claimed}), flush=True)
time.sleep(hold_s)
print(json.dumps({"end": time.time()}), flush=True)
"""


def start_slots(env, hold_s, slots, per_gpu=2):
    return subprocess.Popen([sys.executable, "-c", CLAIM_SLOTS, str(hold_s), str(slots), str(per_gpu)], env=env,
                            stdout=subprocess.PIPE, text=True)


def claimed(process) -> dict:
    """The claim a holder reports as soon as it has its slots."""
    return json.loads(process.stdout.readline())


def finished(process) -> dict:
    out = process.communicate(timeout=60)[0].splitlines()
    return {**json.loads(out[0]), **json.loads(out[-1])}


def test_k_one_slot_jobs_share_a_device_the_next_waits(fake_gpus):
    jobs = [start_slots(fake_gpus, 3, 1) for _ in range(4)]  # 2 devices x 2 slots: all four fit
    first = [claimed(job) for job in jobs]
    fifth = start_slots(fake_gpus, 0, 1)
    results = [finished(job) | claim for job, claim in zip(jobs, first)] + [finished(fifth)]
    four, last = results[:4], results[4]
    assert sorted((r["gpu"], r["held"][0]) for r in four) == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]
    assert all(r["visible"] == r["gpu"] for r in results)
    assert max(r["claimed"] for r in four) < min(r["end"] for r in four), "the four held their slots together"
    assert last["claimed"] >= min(r["end"] for r in four) - 0.05, "the fifth waited for a free slot"
    # at no time more than 2 jobs on one device
    for gpu in ("0", "1"):
        on = [r for r in results if r["gpu"] == gpu]
        for r in on:
            assert sum(o["claimed"] <= r["claimed"] < o["end"] for o in on) <= 2


def test_a_two_slot_job_waits_for_two_free_slots_on_one_device(fake_gpus):
    a = start_slots(fake_gpus, 8, 1)  # the fullest device that fits comes first: a and b share GPU 0
    a_claim = claimed(a)
    b = start_slots(fake_gpus, 1, 1)
    b_claim = claimed(b)
    c = start_slots(fake_gpus, 4, 1)  # GPU 0 is full: GPU 1
    c_claim = claimed(c)
    assert (a_claim["gpu"], b_claim["gpu"], c_claim["gpu"]) == ("0", "0", "1")
    b_done = finished(b)
    time.sleep(0.5)
    whole = start_slots(fake_gpus, 0, 2)  # 2 slots free in all (one on each device), but not on one device
    w, c_done, a_done = finished(whole), finished(c), finished(a)
    assert w["claimed"] > b_done["end"] + 0.4
    assert w["claimed"] >= c_done["end"] - 0.05, "it waited for GPU 1 to empty"
    assert w["gpu"] == "1" and w["claimed"] < a_done["end"], "and took the device that emptied, while a still ran"
    assert w["held"] == [], "two of two slots: the whole device's lock"


def test_whole_device_and_slot_holders_exclude_each_other(fake_gpus):
    fake_gpus["TLSWEEP_GPUS"] = "0"
    whole = start_slots(fake_gpus, 2, 2)
    w = claimed(whole)
    part = start_slots(fake_gpus, 0, 1)
    p = finished(part)
    w = finished(whole) | w
    assert p["claimed"] >= w["end"] - 0.05
    part = start_slots(fake_gpus, 2, 1)
    p = claimed(part)
    whole = start_slots(fake_gpus, 0, 2)
    w, p = finished(whole), finished(part) | p
    assert w["claimed"] >= p["end"] - 0.05


def test_a_killed_job_frees_its_slots(fake_gpus):
    fake_gpus["TLSWEEP_GPUS"] = "0"
    holders = [start_slots(fake_gpus, 60, 1) for _ in range(2)]
    held = [claimed(h)["held"] for h in holders]
    assert sorted(held) == [[0], [1]]
    waiting = start_slots(fake_gpus, 0, 1)
    time.sleep(1.0)
    assert waiting.poll() is None, "both slots are taken"
    holders[1].kill()
    holders[1].wait()
    result = finished(waiting)
    assert result["gpu"] == "0" and result["held"] == held[1], "it got the killed job's slot"
    holders[0].kill()
    holders[0].wait()
    assert finished(start_slots(fake_gpus, 0, 2))["gpu"] == "0", "all slots are free again"


def test_one_slot_per_gpu_uses_the_device_lock_as_before(fake_gpus, tmp_path):
    fake_gpus["TLSWEEP_GPUS"] = "0"
    result = finished(start_slots(fake_gpus, 0, 1, per_gpu=1))
    assert result["gpu"] == "0" and result["held"] == []
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == ["gpu0.lock"]
