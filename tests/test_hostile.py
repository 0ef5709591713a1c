"""Faults of a hostile run (issue 19), each reproduced with real processes: a kill right after a cell's
outputs are written, a full disk, damaged checkpoints."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, make_cell
from conftest import train_command as unit_train_command
from histories import TIMING_COLUMNS
from workflow.integrity import DamagedFileError
from workflow.core.cell import DEFAULT_TRAINING
from workflow.train.cell import train_cell
from workflow.train.state import BEST_SO_FAR, LAST

OUTPUTS = ("metrics.json", "history.csv", "best.pt", "predictions.npz")


def one_stage_cell(epochs=2, **axes):
    return make_cell(training={"stages": [{"name": "all", "train": "all", "epochs": epochs}], "deterministic": True},
                     **{"batch_size": 64, **axes})


def train_command(cell, shard, out, init=None):
    return unit_train_command(cell, shard, out, init, threads=1)


def job_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.pipeline
def test_a_kill_right_after_metrics_json_loses_no_training(shard, tmp_path):
    out = tmp_path / "cell"
    cell = one_stage_cell()
    with open(tmp_path / "run1.log", "w") as log:
        job = subprocess.Popen(train_command(cell, shard, out), stdout=log, stderr=subprocess.STDOUT,
                               env=job_env())
    deadline = time.monotonic() + 300
    while not (out / "metrics.json").exists():
        assert job.poll() is None and time.monotonic() < deadline, (tmp_path / "run1.log").read_text()
        time.sleep(0.002)
    job.kill()  # the instant after metrics.json: Snakemake still counts the job incomplete
    job.wait()
    first = json.loads((out / "metrics.json").read_text())
    history = pd.read_csv(out / "history.csv")
    for name in OUTPUTS:  # what Snakemake does before it runs an incomplete job again
        (out / name).unlink(missing_ok=True)
    rerun = subprocess.run(train_command(cell, shard, out), capture_output=True, text=True, env=job_env(),
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "finished training in an earlier job" in rerun.stdout
    assert "train loss" not in rerun.stdout  # not one epoch trained again
    again = json.loads((out / "metrics.json").read_text())
    for key in ("status", "test_accuracy", "test_loss", "best_epoch", "best_val_accuracy", "confusion_matrix"):
        assert again[key] == first[key], key
    pd.testing.assert_frame_equal(pd.read_csv(out / "history.csv"), history)
    assert torch.load(out / "best.pt", weights_only=False)["epoch"] == first["best_epoch"]
    finished = torch.load(out / LAST, weights_only=False)
    assert finished["finished"] and "model" not in finished  # no second copy of the weights
    assert os.path.samefile(out / "best.pt", out / BEST_SO_FAR)


def test_a_changed_best_so_far_is_not_finished_from_but_trained_again(shard, tmp_path):
    cell = one_stage_cell(epochs=1)
    out = tmp_path / "cell"
    train_cell(cell, shard, out, log=lambda _: None)
    reference = pd.read_csv(out / "history.csv").drop(columns=list(TIMING_COLUMNS))
    with open(out / BEST_SO_FAR, "r+b") as f:  # damaged in place: best.pt, its hard link, too
        f.seek(200)
        f.write(b"\0" * 64)
    for name in OUTPUTS:
        (out / name).unlink()
    messages = []
    metrics = train_cell(cell, shard, out, log=messages.append)
    assert any("missing or changed; training afresh" in m for m in messages)
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 1
    pd.testing.assert_frame_equal(pd.read_csv(out / "history.csv").drop(columns=list(TIMING_COLUMNS)), reference)


def test_a_finished_cell_whose_input_is_written_again_with_the_same_content_is_not_trained_again(shard, tmp_path):
    """What Snakemake does when a finished cell's manifest (or pretrain best.pt) is made again in a run:
    it deletes the cell's outputs and runs its job. Same bytes: nothing trains; other bytes: a real change."""
    import shutil

    import h5py

    data = tmp_path / "data.h5"
    shutil.copyfile(shard, data)
    cell = one_stage_cell(epochs=1)
    out = tmp_path / "cell"
    first = train_cell(cell, data, out, log=lambda _: None)
    assert first["run"]["written_again"] is False

    def make_again(change=None):  # a new file (new inode and time) in the old one's place
        fresh = tmp_path / "fresh.h5"
        shutil.copyfile(data, fresh)
        if change:
            with h5py.File(fresh, "a") as f:
                f.attrs["made_again"] = change
        os.replace(fresh, data)
        for name in OUTPUTS:
            (out / name).unlink()

    make_again()
    messages = []
    again = train_cell(cell, data, out, log=messages.append)
    assert any("finished training in an earlier job" in m for m in messages), messages
    assert not any("train loss" in m for m in messages)
    assert again["run"]["written_again"] is True and again["wall_time_s"] == first["wall_time_s"]
    for key in ("status", "test_accuracy", "test_loss", "best_epoch", "confusion_matrix"):
        assert again[key] == first[key], key

    make_again(change="other bytes")
    messages = []
    changed = train_cell(cell, data, out, log=messages.append)
    assert any("belongs to another cell config or other input files" in m for m in messages), messages
    assert changed["run"]["written_again"] is False and changed["epochs_run"] == 1


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MB tmpfs (root only), far too small for one checkpoint of resnet18."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def assert_the_job_failed_naming(result, out, cause):
    assert result.returncode not in (0, 75), result.stdout[-3000:]
    assert cause in result.stderr and str(out) in result.stderr, result.stderr[-3000:]
    assert not (out / "metrics.json").exists()  # no `failed` result: a rerun retries the cell


@pytest.mark.pipeline
def test_a_full_disk_fails_the_job_naming_the_file_and_the_cause(shard, full_disk):
    out = full_disk / "cell"
    result = subprocess.run(train_command(one_stage_cell(epochs=1), shard, out), capture_output=True, text=True,
                            env=job_env(), timeout=300)
    assert_the_job_failed_naming(result, out, "No space left on device")
    assert f"error: No space left on device writing {out}" in result.stderr


@pytest.mark.pipeline
def test_a_file_size_limit_fails_the_job_naming_the_file_and_the_cause(shard, tmp_path):
    out = tmp_path / "cell"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB; Python ignores SIGXFSZ

    result = subprocess.run(train_command(one_stage_cell(epochs=1), shard, out), capture_output=True, text=True,
                            env=job_env(), timeout=300, preexec_fn=limit)
    assert_the_job_failed_naming(result, out, "File too large")


@pytest.mark.pipeline
def test_a_damaged_upstream_checkpoint_fails_the_job_naming_it_and_goes_back_for_retraining(shard, tmp_path):
    upstream = tmp_path / "upstream"
    train_cell(one_stage_cell(epochs=1), shard, upstream, log=lambda _: None)
    best = upstream / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = b"\xff" * 16  # tensor bytes: torch.load still reads them
    best.write_bytes(bytes(data))
    downstream = tmp_path / "downstream"
    seeded = one_stage_cell(epochs=1, weights="pretrain:base")
    result = subprocess.run(train_command(seeded, shard, downstream, init=best), capture_output=True, text=True,
                            env=job_env(), timeout=300)
    assert_the_job_failed_naming(result, best, "is damaged")
    assert not best.exists() and (upstream / "best.pt.damaged").exists()  # Snakemake trains base again


def test_a_truncated_checkpoint_is_an_error_naming_the_file(shard, tmp_path):
    from workflow.train.models import read_weights_file

    out = tmp_path / "cell"
    train_cell(one_stage_cell(epochs=1), shard, out, log=lambda _: None)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((out / "best.pt").read_bytes()[:5000])
    with pytest.raises(DamagedFileError, match=f"{truncated} is damaged"):
        read_weights_file(truncated)


def seeded_study():
    stages = {"stages": [{"name": "all", "train": "all", "epochs": 1}]}
    return {
        "study": "hostile",
        "datasets": {"digits-012": {"source": "digits", "classes": [0, 1, 2], "seed": 0,
                                    "split": {"train": 0.6, "val": 0.2, "test": 0.2}}},
        "pretrain": {"base": {"dataset": "digits-012", "batch_size": 64, "lr": 0.001, "optimizer": "adam",
                              "weights": "none", "training": stages}},
        "grid": {"dataset": ["digits-012"], "model": ["resnet18"], "resolution": [16], "batch_size": [64],
                 "lr": [0.001], "optimizer": ["adam"], "weights": ["pretrain:base"]},  # 1e-2 ends unstable
        "training": stages, "resources": {"train_threads": 1},
    }


@pytest.mark.pipeline
def test_snakemake_stops_at_a_damaged_upstream_checkpoint_and_keeps_the_downstream_results(tmp_path):
    from conftest import snakemake, write_config

    configfile = str(write_config(tmp_path / "study.yaml", seeded_study()))
    work = tmp_path / "work"
    cells = work / "results/hostile/cells"
    snakemake(work, "--cores", "2", "--configfile", configfile, "--until", "train")
    (downstream,) = cells.glob("*/*/*/*/metrics.json")
    good = downstream.read_text()
    (best,) = (work / "results/hostile/upstream").glob("*/*/*/*/best.pt")
    data = bytearray(best.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = b"\xff" * 16  # new bytes and a new mtime: downstream is out of date
    best.write_bytes(bytes(data))

    target = str(downstream.relative_to(work))
    result = snakemake(work, target, "--cores", "2", "--configfile", configfile, check=False)
    assert result.returncode != 0 and f"{best.relative_to(work)} is damaged" in result.stderr, result.stderr[-3000:]
    assert downstream.read_text() == good  # never replaced
    assert (best.parent / "best.pt.damaged").exists()
    kept = snakemake(work, target, "-n", "--cores", "2", "--configfile", configfile).stdout
    assert "Nothing to be done" in kept  # the downstream cell is done: its results stay
    planned = snakemake(work, str(best.relative_to(work)), "-n", "--cores", "2", "--configfile", configfile).stdout
    assert "train_upstream" in planned, planned  # the damaged cell trains again once a job needs its best.pt


@pytest.mark.pipeline
def test_a_damaged_pretrain_checkpoint_trained_again_to_the_same_bytes_trains_no_finished_cell_again(tmp_path):
    """Issue 27, item 4: the run that trains the pretrain cell again runs its finished grid cells again
    (their input is newer), which write their outputs again without training."""
    from conftest import snakemake, write_config
    from workflow.core import paths

    configfile = str(write_config(tmp_path / "study.yaml", seeded_study()))
    work = tmp_path / "work"
    snakemake(work, "--cores", "2", "--configfile", configfile)
    (downstream,) = (work / "results/hostile/cells").glob("*/*/*/*/metrics.json")
    (best,) = (work / "results/hostile/upstream").glob("*/*/*/*/best.pt")
    good, good_best = json.loads(downstream.read_text()), best.read_bytes()
    data = bytearray(good_best)
    data[len(data) // 2:len(data) // 2 + 16] = b"\xff" * 16
    best.write_bytes(bytes(data))
    target = str(downstream.relative_to(work))
    stopped = snakemake(work, target, "--cores", "2", "--configfile", configfile, check=False)
    assert stopped.returncode != 0 and "the finished cells it started train again only if it comes back with " \
        "other bytes" in stopped.stderr, stopped.stderr[-3000:]  # what the error says is what happens next

    again = snakemake(work, str(best.relative_to(work)), target, "--cores", "2", "--configfile", configfile)
    log = again.stdout + again.stderr
    assert best.read_bytes() == good_best  # trained again on the CPU: the same weights
    assert re.search(r"cell \S+: ok, .*, written again without training$", log, re.M), log[-3000:]
    redone = json.loads(downstream.read_text())
    assert redone["run"]["written_again"] and redone["wall_time_s"] == good["wall_time_s"]
    for key in ("status", "test_accuracy", "test_loss", "best_epoch", "best_val_accuracy", "confusion_matrix"):
        assert redone[key] == good[key], key
    cell_log = (work / paths.cell_log("results/hostile", good["cell"])).read_text()
    assert "finished training in an earlier job" in cell_log and "train loss" not in cell_log, cell_log


@pytest.fixture
def own_dataset(shard, tmp_path, monkeypatch):
    """A copy of the digits shard and its manifest that a test may damage, with its own stamp cache."""
    import shutil

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy2(shard, folder / shard.name)
    shutil.copy2(shard.with_suffix(".json"), folder / "r16.json")
    return folder / "r16.json", folder / shard.name


def damage_keeping_mtime(path: Path) -> None:
    """Overwrite bytes of the first chunk of training images, then set the mtime back."""
    import h5py

    with h5py.File(path, "r") as f:
        offset = f["train/images"].id.get_chunk_info(0).byte_offset
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset + 100)
        f.write(b"\x5a" * 64)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_shard_damaged_with_its_mtime_kept_fails_training_naming_it(own_dataset):
    from workflow.data.batches import load_splits

    manifest, shard_file = own_dataset
    loader = DEFAULT_TRAINING["loader"]
    load_splits(manifest, ("train",), torch.device("cpu"), loader)  # verified, and stamped
    damage_keeping_mtime(shard_file)
    with pytest.raises(DamagedFileError, match=f"shard {shard_file} is damaged"):
        load_splits(manifest, ("train",), torch.device("cpu"), loader)
    assert (shard_file.parent / (shard_file.name + ".damaged")).exists() and not manifest.exists()  # made anew


@pytest.mark.pipeline
def test_a_truncated_shard_fails_the_train_job_naming_it(own_dataset, tmp_path):
    manifest, shard_file = own_dataset
    data = shard_file.read_bytes()
    shard_file.write_bytes(data[:len(data) // 3])
    result = subprocess.run(train_command(one_stage_cell(epochs=1), manifest, tmp_path / "cell"), capture_output=True,
                            text=True, env=dict(job_env(), XDG_CACHE_HOME=str(tmp_path / "cache")), timeout=300)
    assert result.returncode != 0 and f"shard {shard_file} is damaged" in result.stderr, result.stderr[-3000:]


@pytest.mark.pipeline
def test_a_second_run_from_another_folder_is_refused_while_the_first_holds_the_results(tmp_path):
    from conftest import snakemake, write_config

    config = seeded_study()
    config["results_dir"] = str(tmp_path / "shared-results")  # both working folders write here
    config["pretrain"]["base"]["training"] = {"stages": [{"name": "all", "train": "all", "epochs": 3}]}
    configfile = str(write_config(tmp_path / "study.yaml", config))
    lock = tmp_path / "shared-results/hostile/.tlsweep.lock"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with open(tmp_path / "first.out", "w") as sink:
        first = subprocess.Popen([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                                  "--directory", str(tmp_path / "one"), "--cores", "1", "--configfile", configfile,
                                  "--until", "train_upstream"], stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.out").read_text()[-3000:]
            time.sleep(0.1)
        second = snakemake(tmp_path / "two", "--cores", "1", "--configfile", configfile, "--until", "train_upstream",
                           check=False)
        assert first.poll() is None, "the first run ended before the second was refused"
        assert first.wait(timeout=600) == 0, (tmp_path / "first.out").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    output = second.stdout + second.stderr
    assert second.returncode != 0
    assert f"{lock.parent} is in use by another run: Snakemake process {first.pid}" in output, output[-3000:]
    assert f"working folder {tmp_path / 'one'}" in output and "--unlock" not in output
    (metrics,) = lock.parent.glob("upstream/*/*/*/*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "ok"  # the first run's result, untouched
    assert not list((tmp_path / "two").rglob("*.h5"))  # the second run did nothing at all


@pytest.mark.pipeline
def test_on_a_full_disk_the_error_that_ended_a_train_job_reaches_snakemakes_output(tmp_path, full_disk):
    from conftest import snakemake, write_config

    config = seeded_study()
    del config["pretrain"]
    config["grid"]["weights"] = ["none"]
    config.update(results_dir=str(full_disk), data_dir=str(tmp_path / "data"))
    configfile = str(write_config(tmp_path / "study.yaml", config))
    work = tmp_path / "work"
    snakemake(work, "--cores", "1", "--configfile", configfile, "--until", "manifest")
    (full_disk / "hostile/logs/train").mkdir(parents=True)
    with open(full_disk / "filler", "wb", buffering=0) as filler:  # every block of the disk taken
        try:
            while filler.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    result = snakemake(work, "--cores", "1", "--configfile", configfile, "--until", "train", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "error: No space left on device writing" in output, output[-3000:]
