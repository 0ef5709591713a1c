"""Watching a sweep: a training job that names its cell, its progress file, progress lines and the
log of every attempt, Ctrl-C (SIGINT) handled like SIGTERM, TensorBoard events, `status` in every
state, and the console of a real Snakemake run."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import REPO, make_cell, snakemake, snakemake_log, write_cell_study, write_config
from fakecells import study_config, write_cell
from histories import TIMING_COLUMNS
from test_halving import write_rung
from workflow.study.config import load_config
from workflow.study.grid import build_study
from workflow.sweep.halving import rank_rung
from workflow.track.status import status_table
from workflow.track.watch import Watch
from workflow.train.signals import EXIT_STOPPED
from workflow.train.state import LAST

def watched_cell(stages=None):
    return make_cell(training={"stages": stages or [{"name": "head", "train": "head", "epochs": 1},
                                                    {"name": "finetune", "train": "all", "epochs": 2, "lr_factor": 0.1}],
                               "deterministic": True})


CELL_ID = watched_cell().id


def start_job(study_file, shard, out, stdout):
    """`python -m workflow train` as the rules run it: the study file and the cell's id."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-m", "workflow", "train", "--configfile", str(study_file), "--cell", CELL_ID,
         "--manifest", str(shard), "--out", str(out), "--threads", "1"],
        stdout=stdout, stderr=subprocess.STDOUT, env=env)


def wait_for_line(path, text, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        assert process.poll() is None, path.read_text() if path.exists() else "no log"
        time.sleep(0.01)
    raise AssertionError(f"{text!r} not in {path} within {timeout} s")


@pytest.mark.pipeline
def test_sigint_mid_epoch_then_a_rerun_gives_the_uninterrupted_history_and_tracking_equals_it(shard, tmp_path,
                                                                                              monkeypatch):
    cell_file = write_cell_study(watched_cell(), tmp_path / "watched.yaml", study="watched",
                                 results_dir=str(tmp_path / "results"),
                                 tracking={"progress_every": 1, "tensorboard": True, "mlflow": True})
    reference_file = write_cell_study(watched_cell(), tmp_path / "reference.yaml")
    out, reference_out = tmp_path / "cell", tmp_path / "reference"
    with open(tmp_path / "reference.out", "w") as sink:
        reference = start_job(reference_file, shard, reference_out, sink)
    with open(tmp_path / "run1.out", "w") as sink:
        first = start_job(cell_file, shard, out, sink)
    log = out / "train.log"
    wait_for_line(log, "epoch 2 (finetune): batch 2/11", first)
    (running,) = (json.loads((out / "progress.json").read_text()),)
    assert running["state"] == "running" and running["pid"] == first.pid and running["planned_epochs"] == 3
    os.kill(first.pid, signal.SIGINT)  # what Ctrl-C sends
    assert first.wait(timeout=300) == EXIT_STOPPED, log.read_text()
    first_attempt = log.read_text()
    assert "Traceback" not in first_attempt and "KeyboardInterrupt" not in first_attempt
    assert "stopped by SIGINT in epoch 2 after" in first_attempt
    saved = torch.load(out / LAST, weights_only=False)  # whole: written before the job exited
    assert saved["stopped_by"] == "SIGINT" and saved["position"]["epoch"] == 2
    stopped = json.loads((out / "progress.json").read_text())
    assert (stopped["state"], stopped["signal"], stopped["epoch"]) == ("stopped", "SIGINT", 1)
    assert stopped["batch"] == saved["position"]["batches"]

    with open(tmp_path / "run2.out", "w") as sink:
        second = start_job(cell_file, shard, out, sink)
    assert second.wait(timeout=300) == 0 and reference.wait(timeout=300) == 0, log.read_text()
    expected = pd.read_csv(reference_out / "history.csv")
    history = pd.read_csv(out / "history.csv")
    pd.testing.assert_frame_equal(history.drop(columns=list(TIMING_COLUMNS)),
                                  expected.drop(columns=list(TIMING_COLUMNS)), check_exact=True)
    both = log.read_text()
    assert both.startswith(first_attempt)  # appended, not overwritten
    assert "warning:" not in both  # no tracking failed
    headers = [line for line in both.splitlines() if line.startswith("===== attempt")]
    assert len(headers) == 2 and "attempt 1," in headers[0] and headers[0].endswith(": fresh =====")
    assert "attempt 2," in headers[1] and "stopped by SIGINT" in headers[1]
    assert f"after epoch 1 and {saved['position']['batches']} batches of epoch 2" in headers[1]
    assert json.loads((out / "progress.json").read_text())["state"] == "done"
    assert not (reference_out / "tensorboard").exists()  # tracking off: no events

    assert_tensorboard_equals(out, history)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'results/mlflow.db'}")  # the default store
    assert_one_mlflow_run_equals(history, json.loads((out / "metrics.json").read_text()))


def assert_tensorboard_equals(out, history):
    """The cell's TensorBoard events hold its history, each epoch once, and its hyperparameters."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for column in ("train_loss", "val_loss", "val_accuracy", "lr"):
        scalars = events.Scalars(column)
        assert [s.step for s in scalars] == history["epoch"].tolist(), column  # the replayed epoch once
        assert [s.value for s in scalars] == pytest.approx(history[column].tolist(), rel=1e-6), column
    metrics = json.loads((out / "metrics.json").read_text())
    (test_accuracy,) = events.Scalars("hparams/test_accuracy")
    assert test_accuracy.value == pytest.approx(metrics["test_accuracy"], rel=1e-6)
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(events.PluginTagToContent("hparams"))


def assert_one_mlflow_run_equals(history, metrics):
    """One MLflow run for the stopped and resumed cell, nested under the study's, equal to its history."""
    import mlflow
    from mlflow.tracking import MlflowClient

    runs = mlflow.search_runs(experiment_names=["watched"], output_format="list")
    (cell_run,) = [run for run in runs if run.data.tags.get("tlsweep.cell") == CELL_ID]
    (study_run,) = [run for run in runs if run.data.tags.get("tlsweep.study") == "watched"]
    assert len(runs) == 2 and cell_run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
    assert cell_run.info.status == "FINISHED"
    assert (cell_run.data.params["lr"], cell_run.data.params["model"]) == ("0.01", "resnet18")
    assert cell_run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    client = MlflowClient()
    for column in ("train_loss", "val_loss", "val_accuracy", "lr"):
        logged = sorted(client.get_metric_history(cell_run.info.run_id, column), key=lambda m: m.step)
        assert [m.step for m in logged] == history["epoch"].tolist(), column
        assert [m.value for m in logged] == pytest.approx(history[column].tolist(), rel=1e-12), column
    assert "best.pt" in [artifact.path for artifact in client.list_artifacts(cell_run.info.run_id)]


def test_status_names_every_state_from_the_files_alone(tmp_path):
    config = study_config(tmp_path, lr=[0.1, 0.03, 0.01, 0.003, 0.001])
    study = build_study(config)
    done, failed, running, killed, waiting = study.grid_cells
    done_per_epoch = write_cell(study, done, epochs=4, train_time_s=40.0)["wall_time_s"] / 4
    write_cell(study, failed, status="failed", epochs=0, error="SplitTooSmallError: too few images")
    alive = Watch(study.cell_dir(running.id), running)
    alive.write(epoch=1, stage="finetune", elapsed_s=20.0, since=time.time(), val_accuracy=0.5)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = Watch(study.cell_dir(killed.id), killed)
    dead.record["pid"] = int(gone.stdout)  # a job that no longer runs, on this machine
    dead.write(epoch=2, stage="finetune", elapsed_s=30.0, since=time.time())

    table = status_table(study).set_index("cell")
    assert table.loc[done.id, "state"] == "done" and table.loc[failed.id, "state"] == "failed"
    assert "SplitTooSmallError" in table.loc[failed.id, "note"]
    assert (table.loc[running.id, "state"], table.loc[running.id, "epoch"]) == ("running", 1)
    assert (table.loc[killed.id, "state"], table.loc[killed.id, "note"]) == ("stopped", "killed")
    assert table.loc[waiting.id, "state"] == "waiting"
    planned = sum(stage["epochs"] for stage in running.training.stages)
    assert table.loc[running.id, "planned"] == planned
    assert table.loc[running.id, "eta_s"] == pytest.approx((planned - 1) * 20.0)
    # a waiting cell's epochs take the mean of the epoch times measured: running 20 s, killed 15 s, and done's
    assert table.loc[waiting.id, "eta_s"] == pytest.approx(planned * (20.0 + 15.0 + done_per_epoch) / 3)

    result = subprocess.run([sys.executable, "-m", "workflow", "status", "--configfile",
                             str(write_config(tmp_path / "study.yaml", config))],
                            capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "hand: 2/5 cells finished (1 running, 1 waiting, 1 stopped, 1 failed); ETA" in result.stdout


def test_status_names_a_damaged_metrics_json_and_what_to_do(tmp_path):
    study = build_study(study_config(tmp_path, lr=[0.1]))
    (cell,) = study.grid_cells
    write_cell(study, cell, epochs=2)
    metrics = study.cell_dir(cell.id) / "metrics.json"
    metrics.write_text('{"status": "ok"')  # cut short
    row = status_table(study).set_index("cell").loc[cell.id]
    assert row["state"] == "damaged" and row["note"].startswith(f"{metrics} is damaged (JSONDecodeError")
    assert row["note"].endswith("delete it and run again to redo the cell")


def test_status_of_a_halving_study_shows_pruned_cells_and_the_rung_a_cell_is_in(tmp_path):
    config = {**study_config(tmp_path, lr=[0.1, 0.01]), "search": {"method": "halving", "rungs": [1, 3], "keep": 0.5}}
    study = build_study(config)
    low, high = study.grid_cells
    files = [write_rung(study, c, 0, [acc]) for c, acc in zip(study.grid_cells, [0.5, 0.6])]
    study.ranking_path(0).parent.mkdir(parents=True)
    study.ranking_path(0).write_text(json.dumps(rank_rung(files, study.halving, 0)))
    table = status_table(study).set_index("cell")
    assert (table.loc[low.id, "state"], table.loc[low.id, "note"]) == ("pruned", "rung 0")
    assert (table.loc[high.id, "state"], table.loc[high.id, "planned"]) == ("waiting", 3)  # rung 1's budget


@pytest.mark.pipeline
def test_a_snakemake_run_shows_no_json_and_the_job_files_change_nothing_on_a_rerun(tmp_path, study_file):
    config = {
        "study": "quiet",
        "datasets": {"digits-012": {"source": "digits", "classes": [0, 1, 2], "seed": 0,
                                    "split": {"train": 0.6, "val": 0.2, "test": 0.2}}},
        "grid": {"dataset": ["digits-012"], "model": ["resnet18"], "resolution": [16], "batch_size": [64],
                 "lr": [0.001], "optimizer": ["adam"], "weights": ["none"]},  # at 1e-2 unstable: the run fails
        "training": {"stages": [{"name": "all", "train": "all", "epochs": 1}]},
        "export": {"enabled": False},
        "resources": {"train_threads": 1},
    }
    configfile = study_file(config)
    work = tmp_path / "work"
    result = snakemake(work, "--cores", "2", "--configfile", str(configfile), "-p")
    console = result.stdout + result.stderr
    log = snakemake_log(work)  # the commands: not on the console
    cell = "digits-012/resnet18/r16/bs64-lr1e-3-adam-all-s0-wnone"
    assert f"python -m workflow train --configfile results/quiet/study.yaml --cell {cell} " in log
    commands = [line[line.index("python -m workflow "):] for line in log.splitlines()
                if "python -m workflow " in line]
    ran = {line.split()[3] for line in commands}
    assert {"plan", "train", "aggregate"} <= ran, log[-4000:]  # one cell: no charts to draw
    key = build_study(load_config(configfile)).data_key("digits-012")
    assert f"python -m workflow plan --configfile results/quiet/study.yaml --data-key {key} " in log
    assert not [line for line in (console + log).splitlines() if "{" in line], console[-4000:]  # no JSON at all
    assert load_config(work / "results/quiet/study.yaml") == load_config(configfile)  # what the jobs read
    folder = work / "results/quiet/cells" / cell
    assert json.loads((folder / "metrics.json").read_text())["config"] == json.loads(
        build_study(load_config(configfile)).cell(cell).to_json())
    assert "===== attempt 1" in (folder / "train.log").read_text()
    assert "Nothing to be done" in snakemake(work, "-n", "--configfile", str(configfile)).stdout
    config["datasets"]["digits-012"]["seed"] = 1  # a changed dataset entry is planned anew, in a folder of its own
    changed = study_file(config)
    dry_run = snakemake(work, "-n", "--configfile", str(changed)).stdout
    new_key = build_study(load_config(changed)).data_key("digits-012")
    assert new_key != key and f"rule plan:\n    output: results/data/{new_key}/plan.json" in dry_run, dry_run[-3000:]


def test_a_tracking_or_progress_failure_warns_once_and_the_cell_trains_on(shard, tmp_path):
    from workflow.train.cell import train_cell

    (tmp_path / "taken").write_text("a file where the events folder should be")
    tracking = {"tensorboard": True, "mlflow": True, "experiment": "broken", "tracking_uri": "nosuchstore://x"}
    cell = watched_cell(stages=[{"name": "head", "train": "head", "epochs": 1}])
    messages = []
    out = tmp_path / "cell"
    watch = Watch(out, cell, tracking, log=messages.append)
    watch.trackers[0].folder = str(tmp_path / "taken")  # TensorBoard cannot make its folder
    (out / "progress.json").mkdir(parents=True)  # nor can progress.json be written
    metrics = train_cell(cell, shard, out, log=messages.append, watch=watch)
    assert metrics["status"] == "ok" and (out / "metrics.json").exists()
    warnings = [m for m in messages if m.startswith("warning:")]
    assert len(warnings) == 3, messages  # each once
    assert "cannot write progress.json" in warnings[0]
    assert "TensorBoard events are off" in warnings[1] and "MLflow runs are off" in warnings[2]


@pytest.mark.pipeline
def test_a_terminal_gets_a_progress_bar_and_the_log_file_no_bar(shard, tmp_path):
    import pty
    import select

    cell = watched_cell(stages=[{"name": "head", "train": "head", "epochs": 1}])  # one epoch of 11 batches
    cell_file = write_cell_study(cell, tmp_path / "study.yaml", tracking={"progress_every": 5})
    terminal, stderr = pty.openpty()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    with open(tmp_path / "stdout", "w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "workflow", "train", "--configfile", str(cell_file), "--cell", cell.id,
             "--manifest", str(shard), "--out", str(tmp_path / "cell")], stdout=stdout, stderr=stderr, env=env)
    os.close(stderr)
    shown = b""
    while True:  # read what the terminal shows until the job closes it
        if select.select([terminal], [], [], 300)[0]:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the job exited
                break
            if not chunk:
                break
            shown += chunk
    assert process.wait(timeout=60) == 0, shown.decode(errors="replace")
    shown = shown.decode(errors="replace")
    assert "epoch 1 (head)" in shown and "11/11" in shown and "batch" in shown and "\r" in shown  # tqdm's bar
    for written in ((tmp_path / "stdout").read_text(), (tmp_path / "cell" / "train.log").read_text()):
        assert "batch 5/11" not in written and "11/11" not in written  # no lines, no bar
        assert "epoch 1 (head, lr" in written  # the epoch's summary line


def test_the_study_file_reads_back_as_the_config(tmp_path):
    from workflow.study.study_file import write_study_file

    config = load_config(write_config(tmp_path / "study.yaml", study_config(tmp_path, lr=[1e-5, 0.01])))
    write_study_file(config, tmp_path / "written.yaml")
    assert load_config(tmp_path / "written.yaml") == config  # 1e-05 stays a number
    written = os.stat(tmp_path / "written.yaml").st_mtime_ns
    time.sleep(0.01)
    write_study_file(config, tmp_path / "written.yaml")
    assert os.stat(tmp_path / "written.yaml").st_mtime_ns == written  # rewritten only when it changes
