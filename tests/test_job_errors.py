"""The error that ends a job, of every kind, reaches Snakemake's stderr as one line naming the file and the
cause (issues 26 and 27): weights that cannot be fetched, a full disk, a read-only results folder. The
disks are real: small tmpfs mounts (root only; skipped otherwise)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, load_study_file, snakemake, write_config

RESNET18 = "resnet18-f37072fd.pth"


@pytest.fixture
def mount(tmp_path):
    """mount(folder, size, read_only=False): a tmpfs of `size` at a new `folder` (root only)."""
    mounted = []

    def make(folder: Path, size: str, read_only: bool = False) -> Path:
        folder.mkdir(parents=True)
        options = f"size={size}" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (not root)")
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)


def digits_study(**keys) -> dict:
    """One small cell on digits 0-2, from scratch, with top-level `keys` besides."""
    return {
        "study": "errors",
        "datasets": {"digits-012": {"source": "digits", "classes": [0, 1, 2]}},
        "grid": {"dataset": ["digits-012"], "model": ["resnet18"], "resolution": [32], "batch_size": [64],
                 "lr": [0.01], "optimizer": ["adam"], "weights": ["none"]},
        "training": {"stages": [{"name": "all", "train": "all", "epochs": 1}]},
        "resources": {"train_threads": 1},
        **keys,
    }


def assert_one_line_error(result, *parts: str) -> str:
    """Snakemake failed, and its output holds a line that names each of `parts`, and no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    lines = [line for line in output.splitlines() if all(part in line for part in parts)]
    assert lines, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    return lines[0]


def shell_lines() -> dict[str, str]:
    """{rule: its shell command as written} of every rule in rules/*.smk."""
    found = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=[ ]*(?:rule|checkpoint) \w+:)", smk.read_text()):
            rule = re.match(r"[ ]*(?:rule|checkpoint) (\w+):", block)
            shell = re.search(r"\n[ ]+shell:\n((?:[ ]+\".*\"\n?)+)", block)
            if rule and shell:
                found[rule[1]] = "".join(re.findall(r"\"(.*)\"", shell[1]))
    return found


def test_every_rule_sends_the_error_that_ends_its_job_to_snakemakes_stderr():
    shells = shell_lines()
    assert {"plan", "shard", "manifest", "download", "probe_memory", "train_upstream", "train_rung", "rank_rung",
            "finish_cell", "tpe_round", "aggregate", "charts", "export_index", "export", "fetch_weights",
            "fetch_timm_weights"} <= set(shells), sorted(shells)
    for rule, shell in shells.items():
        assert shell.startswith("TLSWEEP_ERROR_FD=3 "), (rule, shell)
        assert shell.endswith(" 3>&2 > {log:q} 2>&1"), (rule, shell)


def job(*args: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run `python -m workflow <args>` as a rule does, with $TLSWEEP_ERROR_FD on a pipe: (its result, what the
    pipe got)."""
    read, write = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(REPO), TLSWEEP_ERROR_FD=str(write))
    result = subprocess.run([sys.executable, "-m", "workflow", *args], pass_fds=(write,), env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    os.close(write)
    with os.fdopen(read) as pipe:
        return result, pipe.read()


def test_a_full_disk_is_one_line_naming_the_file_on_the_log_and_snakemakes_stderr(tmp_path, mount):
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(256 << 10))
    disk = mount(tmp_path / "disk", "64k")
    result, reported = job("download", "--url", source.as_uri(), "--dest", str(disk / "copy.bin"))
    line = (f"error: No space left on device writing {disk / 'copy.bin'}: free space on that disk, or set "
            f"results_dir, data_dir or raw_dir in the study file to a folder on another disk, and run again\n")
    assert result.returncode == 1 and reported == line and result.stderr == line


def test_hdf5s_full_disk_error_names_the_file_being_written(tmp_path, mount):
    import h5py
    import numpy as np

    from workflow.atomic import atomic_path
    from workflow.integrity import fatal_message

    disk = mount(tmp_path / "disk", "64k")
    with pytest.raises((OSError, RuntimeError)) as caught:
        with atomic_path(disk / "shard.h5") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("images", data=np.ones((256, 1024), np.uint8))
    message, said = fatal_message(caught.value)
    assert said and message.startswith(f"No space left on device writing {disk / 'shard.h5'}: "), message


def test_a_read_only_folder_is_one_line_naming_it(tmp_path, mount):
    source = tmp_path / "source.bin"
    source.write_bytes(b"bytes")
    disk = mount(tmp_path / "disk", "64k", read_only=True)
    result, reported = job("download", "--url", source.as_uri(), "--dest", str(disk / "copy.bin"))
    assert result.returncode == 1 and result.stderr == reported
    assert reported.startswith(f"error: Read-only file system: {disk} is not writable; make it writable"), reported


def test_a_bad_study_file_and_a_bug_are_one_line_on_snakemakes_stderr_and_a_bug_keeps_its_traceback(tmp_path):
    configfile = write_config(tmp_path / "study.yaml", {**digits_study(), "no_such_key": 1})
    result, reported = job("plan", "--configfile", str(configfile), "--data-key", "digits-0123456789ab",
                           "--out", str(tmp_path / "plan.json"), "--definition", str(tmp_path / "definition.json"))
    assert result.returncode == 1 and reported.count("\n") == 1 and "no_such_key" in reported
    assert "Traceback" not in result.stderr
    (tmp_path / "plan.json").write_text("{not json")
    result, reported = job("manifest", "--plan", str(tmp_path / "plan.json"), "--resolution", "16",
                           "--shards", "x.h5", "--out", str(tmp_path / "r16.json"))
    assert result.returncode == 1 and reported.startswith("error: JSONDecodeError: ") and reported.count("\n") == 1
    assert "Traceback (most recent call last)" in result.stderr and result.stderr.endswith(reported)


def test_timm_weights_that_cannot_be_fetched_are_one_line_naming_the_cache_and_the_ways_out(tmp_path,
                                                                                           monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine that cannot reach the hub
    result, reported = job("fetch-weights", "--timm", "timm:resnet10t")
    assert result.returncode == 1 and result.stderr == reported and reported.count("\n") == 1
    for part in ("cannot download the weights of timm:resnet10t", str(tmp_path / "hf" / "hub"), "$HF_HOME/hub",
                 "python -m workflow fetch-weights --timm timm:resnet10t", "weights: none", "pretrain"):
        assert part in reported, reported


def refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.pipeline
def test_weights_that_cannot_be_fetched_are_one_line_naming_the_file_the_url_and_the_ways_out(
        tmp_path, monkeypatch):
    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{refused_port()}")  # the weights host is unreachable
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    config = digits_study()
    config["grid"]["weights"] = ["imagenet"]
    configfile = str(write_config(tmp_path / "study.yaml", config))
    checkpoints = torch_home / "hub" / "checkpoints"
    dry = snakemake(tmp_path, "-n", "--configfile", configfile)
    notes = [line for line in dry.stderr.splitlines() if RESNET18 in line]
    assert notes == [f"ImageNet weights not cached yet, downloaded before training into {checkpoints}: {RESNET18}"]
    assert not torch_home.exists()  # said, not made
    result = snakemake(tmp_path, str(checkpoints / RESNET18), "--cores", "1", "--configfile", configfile,
                       check=False)
    line = assert_one_line_error(result, RESNET18, f"https://download.pytorch.org/models/{RESNET18}",
                                 str(checkpoints), "$TORCH_HOME/hub/checkpoints",
                                 "python -m workflow fetch-weights", "weights: none", "pretrain")
    assert "Connection refused" in line
    cached = snakemake(tmp_path, "-n", "--configfile", configfile)  # still not cached: still listed
    assert RESNET18 in cached.stderr


@pytest.mark.pipeline
def test_a_full_data_dir_while_sharding_is_one_line_naming_the_file_and_the_cause(tmp_path, mount):
    disk = mount(tmp_path / "data", "256k")  # the plan fits, a shard of 32 px images does not
    configfile = str(write_config(tmp_path / "study.yaml", digits_study(data_dir=str(disk))))
    result = snakemake(tmp_path / "work", "--cores", "1", "--configfile", configfile, "--until", "shard",
                       check=False)
    folder = disk / load_study_file(configfile).data_key("digits-012")  # the data folder of its definition
    assert (folder / "plan.json").exists()
    line = assert_one_line_error(result, "No space left on device writing", str(folder / "r32"))
    assert "errno = 28" not in line


def fill(disk: Path, leave: int) -> None:
    """Take every block of `disk` but about `leave` bytes."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    with open(filler, "r+b") as f:
        f.truncate(max(0, filler.stat().st_size - leave))


@pytest.mark.pipeline
def test_a_full_results_folder_during_aggregate_is_one_line_naming_the_file_and_the_cause(tmp_path, mount):
    from fakecells import write_cell

    disk = mount(tmp_path / "results", "1m")
    configfile = str(write_config(tmp_path / "study.yaml", digits_study(results_dir=str(disk))))
    study = load_study_file(configfile)
    for cell in study.grid_cells:
        write_cell(study, cell)
        (study.cell_dir(cell.id) / "best.pt").touch()  # every output of the cell: nothing to train
    fill(disk, leave=16 << 10)  # the study file and the lock fit, the tables do not
    result = snakemake(tmp_path / "work", "--cores", "1", "--configfile", configfile, "--allowed-rules",
                       "aggregate", "--until", "aggregate", check=False)
    assert_one_line_error(result, "No space left on device writing", str(disk / "errors" / "tables"))


@pytest.mark.pipeline
def test_a_read_only_results_folder_is_one_line_naming_it(tmp_path, mount):
    disk = mount(tmp_path / "results", "1m", read_only=True)
    configfile = str(write_config(tmp_path / "study.yaml", digits_study(results_dir=str(disk))))
    snakemake(tmp_path / "work", "-n", "--configfile", configfile)  # a dry run writes nothing: no refusal
    result = snakemake(tmp_path / "work", "--cores", "1", "--configfile", configfile, check=False)
    assert_one_line_error(result, f"Read-only file system: {disk} is not writable", "results_dir")
