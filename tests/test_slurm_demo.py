"""The offline demo study through `--profile profiles/slurm` on a real local SLURM cluster."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime

import pandas as pd
import pytest

from conftest import REPO
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from test_slurm_cluster import max_overlap
from workflow.study.config import load_config
from workflow.study.grid import build_study

pytestmark = pytest.mark.pipeline  # a local SLURM cluster runs the demo through Snakemake

DEMO = REPO / "studies" / "digits-demo.yaml"


def job_ids_by_rule(log: str) -> dict[str, list[str]]:
    """SLURM job ids from the plugin's 'submitted with SLURM jobid M (log: .../rule_<rule>/...)' lines."""
    ids: dict[str, list[str]] = {}
    for job_id, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", log):
        ids.setdefault(rule, []).append(job_id)
    return ids


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_demo_study_through_the_slurm_profile(slurm_cluster: SlurmCluster, tmp_path):
    cluster = slurm_cluster
    env = dict(cluster.env)
    shim, rest = cluster.env["PATH"].split(":", 1)  # the cluster's srun wrapper comes first
    env["PATH"] = f"{shim}:{sys.executable.rsplit('/', 1)[0]}:{rest}"  # then this environment, as if activated
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
        "--profile", str(REPO / "profiles" / "slurm"),
        "--slurm-status-command", "squeue",  # the test cluster has no accounting
        "--slurm-init-seconds-before-status-checks", "2",
        "--set-resources", "train:mem_mb=1500", "train_upstream:mem_mb=1500", "manifest:mem_mb=1500",  # fit the test machine
        "--configfile", str(DEMO),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"{log[-6000:]}\n{cluster.log_tail()}"

    study = build_study(load_config(DEMO))
    out = tmp_path / "results" / "digits-demo"
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert sorted(summary["cell"]) == sorted(cell.id for cell in study.grid_cells)
    assert set(summary["status"]) == {"ok"}
    assert all((out / "charts" / f"{name}.png").stat().st_size > 5000 for name in ("val_accuracy", "test_accuracy"))
    assert (out / "tables" / "best.csv").exists()

    (run_log,) = (tmp_path / ".snakemake" / "log").glob("*.snakemake.log")
    submitted = job_ids_by_rule(run_log.read_text())
    training = submitted.get("train", []) + submitted.get("train_upstream", [])
    assert len(training) == len(study.cells)  # grid and upstream cells, each once
    assert len(submitted.get("manifest", [])) == 2
    assert not {"aggregate", "charts", "all"} & set(submitted), "local rules stay on the submit host"

    intervals = []
    for job_id in training:
        job = cluster.show_job(job_id)
        assert "gres:gpu:1" in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
        intervals.append((seconds(job["StartTime"]), seconds(job["EndTime"])))
    for job_id in submitted["manifest"]:
        job = cluster.show_job(job_id)
        assert "gpu" not in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    assert max_overlap(intervals) <= cluster.gpus
