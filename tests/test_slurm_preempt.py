"""A training job longer than its SLURM time limit completes through retries, on a real local cluster.

Every attempt gets a 1-minute limit (`train_runtime_grows: false`) and asks for
SLURM's warning signal 10 s before it (`--signal=URG@10`, rules/train.smk);
SLURM checks about every 30 s, so the warning comes 20 to 50 s into the job.
The trainer then checkpoints at the next batch boundary and exits with status
75, the job fails, Snakemake resubmits it and the next attempt resumes
mid-epoch. The cell needs about 60 s of training, so at least two attempts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, write_config
from histories import TIMING_COLUMNS
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from workflow.study.config import load_config
from workflow.study.grid import build_study

pytestmark = pytest.mark.pipeline  # a local SLURM cluster runs Snakemake

CELL = "digits/resnet18/r32/bs32-lr1e-2-adam-all-s0-wnone"


def study() -> dict:
    return {
        "study": "preempt",
        "datasets": {"digits": {"source": "digits"}},
        "grid": {"dataset": ["digits"], "model": ["resnet18"], "resolution": [32], "batch_size": [32],
                 "lr": [0.01], "optimizer": ["adam"], "weights": ["none"]},
        "training": {
            # about 60 s on one CPU core: 1 s for the head, then 4 s per epoch (40 batches)
            "stages": [{"name": "head", "train": "head", "epochs": 1},
                       {"name": "all", "train": "all", "epochs": 14, "lr_factor": 0.1}],
            "early_stopping": {"patience": 20},
            "deterministic": True,
        },
        "resources": {"train_threads": 1, "train_mem_mb": 1500, "train_runtime_min": 1,
                      "train_runtime_grows": False, "train_warning_s": 10},
    }


def test_a_training_job_longer_than_its_time_limit_completes_through_retries(slurm_cluster: SlurmCluster,
                                                                              tmp_path):
    cluster = slurm_cluster
    config = study()
    configfile = write_config(tmp_path / "study.yaml", config)
    built = build_study(load_config(configfile))
    cell = built.cells[CELL]
    folder = tmp_path / "results/preempt/cells" / CELL
    index = tmp_path / built.manifest_path("digits", 32)
    env = dict(cluster.env)
    shim, rest = cluster.env["PATH"].split(":", 1)  # the cluster's srun wrapper comes first
    env["PATH"] = f"{shim}:{Path(sys.executable).parent}:{rest}"  # then this environment, as if activated
    command = [
        sys.executable, "-m", "snakemake", f"{folder.relative_to(tmp_path)}/metrics.json",
        "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
        "--profile", str(REPO / "profiles" / "slurm"),
        "--slurm-status-command", "squeue",  # the test cluster has no accounting
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
        "--retries", "6",  # attempts get 20 to 50 s each, less start-up: 2 or 3 are usual, more on a busy machine
        "--set-resources", "plan:mem_mb=1000", "shard:mem_mb=1000", "manifest:mem_mb=1000",
        "--configfile", str(configfile),
    ]  # fmt: skip
    started = time.monotonic()
    out = tmp_path / "snakemake.out"  # a file, not a pipe: nobody reads a pipe until the end, and it fills up
    with open(out, "w") as sink:
        run = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    reference = None
    try:
        while run.poll() is None:  # meanwhile, the same cell never stopped, here, once its data is ready
            if reference is None and index.exists():
                reference = subprocess.Popen(
                    [sys.executable, "-m", "workflow", "train", "--configfile", str(configfile), "--cell", cell.id,
                     "--manifest", str(index), "--out", str(tmp_path / "reference"), "--threads", "1"],
                    env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            assert time.monotonic() - started < 900, "snakemake took more than 15 minutes"
            time.sleep(0.5)
    finally:
        if run.poll() is None:
            run.kill()
        if reference is not None and reference.wait(timeout=300) != 0:
            raise AssertionError("the reference run failed")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, f"{out.read_text()[-6000:]}\n{cluster.log_tail()}"

    metrics = json.loads((folder / "metrics.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    assert metrics["status"] == "ok"
    assert history["epoch"].tolist() == list(range(1, 16))  # no gap, no repeat
    expected = pd.read_csv(tmp_path / "reference" / "history.csv")
    pd.testing.assert_frame_equal(history.drop(columns=list(TIMING_COLUMNS)),
                                  expected.drop(columns=list(TIMING_COLUMNS)), check_exact=True)

    (run_log,) = (tmp_path / ".snakemake" / "log").glob("*.snakemake.log")
    jobs = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_train/", run_log.read_text())
    resumes = metrics["run"]["resumes"]
    assert len(jobs) == len(resumes) + 1 >= 2, (jobs, resumes)
    # every attempt before the last was stopped by the warning (or, had it come too late, the time
    # limit's SIGTERM) and failed; the warning came before the limit at least once
    assert {r["signal"] for r in resumes} <= {"SIGURG", "SIGTERM"} and "SIGURG" in {r["signal"] for r in resumes}
    states = [cluster.show_job(job) for job in jobs]
    assert all(s["TimeLimit"] == "00:01:00" for s in states), states
    assert [s["JobState"] for s in states[:-1]] == ["FAILED"] * len(resumes) and states[-1]["JobState"] == "COMPLETED"
    assert all(s["RunTime"] < "00:01:00" for s in states[:-1]), states  # ended before the time limit
    slurm_logs = tmp_path / ".snakemake/slurm_logs/rule_train" / CELL.replace("/", "_")
    for job in jobs[:-1]:  # the trainer stopped itself: its status, not a kill
        assert "non-zero exit status 75" in (slurm_logs / f"{job}.log").read_text(), job
    print(f"{elapsed:.0f} s, {len(jobs)} attempts, resumed at " + ", ".join(
        f"epoch {r['epoch']} + {r['batch']} batches ({r['signal']})" for r in resumes))
