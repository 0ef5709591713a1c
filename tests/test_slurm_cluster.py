"""Run a tiny workflow through profiles/slurm on a real local SLURM cluster.

Checks what the profile promises: GPU rules reach sbatch with a GPU request,
SLURM (not Snakemake) limits them to the two GPUs, local rules stay local,
and the workstation profile (profiles/default, read too when Snakemake runs
in the repository) does not throttle the cluster.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

pytestmark = pytest.mark.pipeline  # a local SLURM cluster runs Snakemake

REPO = Path(__file__).resolve().parent.parent
SLEEP_S = 10  # long enough for two jobs' sleeps to overlap despite start-up jitter

SNAKEFILE = textwrap.dedent(
    """\
    localrules: prepare

    RUNS = ["a", "b"]


    rule all:
        input:
            expand("train/{run}.txt", run=RUNS),
            "train/typed.txt",


    # local: must not go through sbatch
    rule prepare:
        output:
            "prepared.txt",
        shell:
            'echo "SLURM_JOB_ID=${{SLURM_JOB_ID:-}}" > {output}'


    TRAIN_SHELL = '''
        start=$(date +%s.%N)
        sleep {params.sleep}
        end=$(date +%s.%N)
        {{
          echo "start=$start"
          echo "end=$end"
          echo "SLURM_JOB_ID=${{SLURM_JOB_ID:-}}"
          echo "CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}"
          echo "SLURM_JOB_GPUS=${{SLURM_JOB_GPUS:-}}"
          echo "SLURM_STEP_GPUS=${{SLURM_STEP_GPUS:-}}"
        }} > {output}
    '''


    # mem_mb is set so the test does not depend on the machine's memory;
    # runtime and the partition come from the profile / the cluster.
    rule train:
        input:
            "prepared.txt",
        output:
            "train/{run}.txt",
        params:
            sleep=SLEEP_S,
        threads: 1
        resources:
            gpu=1,
            mem_mb=200,
        shell:
            TRAIN_SHELL


    rule train_typed:
        input:
            "prepared.txt",
        output:
            "train/typed.txt",
        params:
            sleep=SLEEP_S,
        threads: 1
        resources:
            gpu=1,
            gpu_model="GPU_TYPE",
            mem_mb=200,
        shell:
            TRAIN_SHELL
    """
)


def read_kv(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _interval(out: dict[str, str]) -> tuple[float, float]:
    return float(out["start"]), float(out["end"])


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:  # at equal times, ends (-1) sort before starts
        running += step
        peak = max(peak, running)
    return peak


def snakemake_command() -> list[str]:
    return [
        sys.executable, "-m", "snakemake",
        "--profile", str(REPO / "profiles" / "slurm"),
        # what `snakemake` in the repository picks up by itself
        "--workflow-profile", str(REPO / "profiles" / "default"),
        # test-only: no accounting on the test cluster, so sacct cannot answer
        "--slurm-status-command", "squeue",
        # test-only: first status check after 2 s instead of 40 s
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
    ]  # fmt: skip


def test_gpu_jobs_run_through_slurm_profile(slurm_cluster: SlurmCluster, tmp_path):
    cluster = slurm_cluster
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())
    (tmp_path / "Snakefile").write_text(
        f"SLEEP_S = {SLEEP_S}\n"
        + SNAKEFILE.replace("GPU_TYPE", cluster.gpu_type)
    )

    started = time.monotonic()
    result = subprocess.run(
        snakemake_command(),
        cwd=tmp_path,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    elapsed = time.monotonic() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"snakemake failed ({result.returncode}) after {elapsed:.0f}s\n"
        f"{log[-6000:]}\n{cluster.log_tail()}"
    )

    # The local rule ran here, not in a SLURM job.
    assert read_kv(tmp_path / "prepared.txt")["SLURM_JOB_ID"] == ""
    assert not (tmp_path / ".snakemake" / "slurm_logs" / "rule_prepare").exists()

    # Exactly the three GPU jobs were submitted, each once.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    outputs = {
        name: read_kv(tmp_path / "train" / f"{name}.txt") for name in ("a", "b", "typed")
    }
    job_ids = {name: out["SLURM_JOB_ID"] for name, out in outputs.items()}
    assert sorted(submitted) == sorted(job_ids.values()), log[-4000:]

    # Each was submitted with a GPU request and got the resources the
    # profile and the rule asked for (MinJobAge keeps finished jobs visible).
    # the profile's expression for a first attempt, in minutes
    runtime_min = int(eval(str(profile["default-resources"]["runtime"]), {"attempt": 1}))
    for name, job_id in job_ids.items():
        job = cluster.show_job(job_id)
        wanted = f"gres:gpu:{cluster.gpu_type}:1" if name == "typed" else "gres:gpu:1"
        requested = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        assert wanted in requested, (name, job)
        assert job["JobState"] == "COMPLETED", (name, job)
        assert job["Partition"] == cluster.partition, (name, job)
        assert job["NumCPUs"] == "1", (name, job)  # threads: 1
        assert job["MinMemoryNode"] == "200M", (name, job)  # rule mem_mb
        assert job["TimeLimit"] == f"{runtime_min // 60:02d}:{runtime_min % 60:02d}:00"
        assert any((tmp_path / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log"))

    # SLURM, not Snakemake, limited them: all three were queued at once, and
    # never more than two (the cluster's GPUs) ran at the same time.
    intervals = [_interval(o) for o in outputs.values()]
    overlap = max_overlap(intervals)
    assert overlap <= cluster.gpus, intervals
    assert overlap == 2, f"expected both GPUs in use at once: {intervals}"
    submit_times = [cluster.show_job(j)["SubmitTime"] for j in job_ids.values()]
    first_end = min(cluster.show_job(j)["EndTime"] for j in job_ids.values())
    assert max(submit_times) <= first_end, (submit_times, first_end)

    # Jobs that ran at the same time were given different GPUs. Inside the
    # job step (srun) SLURM sets SLURM_STEP_GPUS and CUDA_VISIBLE_DEVICES; the
    # job step drops the batch job's SLURM_JOB_GPUS, so that one is empty.
    for out in outputs.values():
        assert out["SLURM_STEP_GPUS"] != "" and out["CUDA_VISIBLE_DEVICES"] != "", out
    runs = list(outputs.values())
    for i, one in enumerate(runs):
        for other in runs[i + 1 :]:
            if max_overlap([_interval(one), _interval(other)]) == 2:
                assert one["SLURM_STEP_GPUS"] != other["SLURM_STEP_GPUS"], (one, other)
    print(
        f"snakemake took {elapsed:.0f}s; at most {overlap} GPU jobs at once; "
        + "; ".join(
            f"{name}: job {o['SLURM_JOB_ID']} GPU {o['SLURM_STEP_GPUS']}"
            for name, o in outputs.items()
        )
    )
