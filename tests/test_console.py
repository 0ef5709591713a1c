"""What a run shows on the console: one short line per training job, the story at its end (cells by
state, the failed ones, the recommendation, where the tables are), and a non-zero exit when no grid cell
ended `ok` (docs/monitoring.md, "The console")."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import copy_of_finished_tiny_study, snakemake, snakemake_log, tiny_study, write_config
from fakecells import find, make_study, mixed_study, write_cell
from workflow.core import paths
from workflow.results.aggregate import collect
from workflow.track.console import LONGEST, quiet_console, short_header
from workflow.track.run_summary import run_summary
from workflow.train.cell import end_line


def test_the_summary_counts_the_grid_cells_by_outcome(tmp_path):
    study = mixed_study(tmp_path)
    summary = run_summary(study)
    lines = summary.text.splitlines()
    assert lines[0] == "hand: 12 grid cells: 8 ok, 0 failed, 1 diverged, 1 oom, 2 waiting"
    assert lines[-1] == f"Tables: {study.out}/tables/  Charts: {study.out}/charts/" and not summary.no_answer

    # the aggregate job's summary table calls an ok cell unstable (its losses exploded)
    ok_cell = find(study, dataset="d1", batch_size=16, seed=0).id
    Path(paths.tables_folder(study.out)).mkdir(parents=True)
    pd.DataFrame({"cell": [ok_cell], "status": ["unstable"]}).to_csv(paths.table_file(study.out, "summary", "csv"), index=False)
    assert run_summary(study).text.startswith("hand: 12 grid cells: 7 ok, 0 failed, 1 diverged, 1 oom, 1 unstable,")


def test_the_summary_names_ten_failed_cells_and_no_ok_one_is_an_error(tmp_path):
    study = make_study(tmp_path, lr=[0.1 / 2 ** i for i in range(12)])
    assert not run_summary(study).no_answer  # nothing trained yet (a run --until manifest): no verdict
    for cell in study.grid_cells:
        write_cell(study, cell, status="failed", epochs=0, error="SplitTooSmallError: too few\nsecond line")
    summary = run_summary(study)
    lines = summary.text.splitlines()
    assert lines[:2] == ["hand: 12 grid cells: 0 ok, 12 failed", "Failed cells:"]
    listed = [line for line in lines if line.endswith(": SplitTooSmallError: too few")]
    assert len(listed) == 10 and "  and 2 more (python -m workflow status)" in lines
    assert summary.no_answer and lines[-1] == "error: no grid cell ended ok (hand has no result)"


def test_a_run_whose_grid_cells_all_ended_unstable_has_no_answer(tmp_path):
    study = make_study(tmp_path, lr=[0.1, 0.01, 0.001])
    for cell in study.grid_cells:  # finished, but the best weights' test loss exploded
        write_cell(study, cell, test_loss=1e4)
    Path(paths.tables_folder(study.out)).mkdir(parents=True)
    summary_table = collect(study)[0]  # the aggregate job's verdict
    assert set(summary_table["status"]) == {"unstable"}
    summary_table.to_csv(paths.table_file(study.out, "summary", "csv"), index=False)
    summary = run_summary(study)
    lines = summary.text.splitlines()
    assert lines[0] == "hand: 3 grid cells: 0 ok, 0 failed, 3 unstable"
    assert summary.no_answer
    assert lines[-1] == "error: no grid cell ended ok (3 unstable: their losses exploded; hand has no result)"

    write_cell(study, study.grid_cells[0])  # one cell trained well: the others' instability is only a warning
    collect(study)[0].to_csv(paths.table_file(study.out, "summary", "csv"), index=False)
    assert not run_summary(study).no_answer


def test_a_finished_job_says_how_it_ended_in_one_line():
    ok = {"cell": "d/m/r16/bs16-x", "status": "ok", "best_val_accuracy": 0.91234, "best_epoch": 3,
          "test_accuracy": 0.9, "wall_time_s": 125.4}
    assert end_line(ok) == "cell d/m/r16/bs16-x: ok, best val_accuracy 0.9123 (epoch 3), test_accuracy 0.9000, 2m05s"
    failed = {"cell": "d/m/r16/bs16-x", "status": "failed", "error": "TrainValueError: no\nmore"}
    assert end_line(failed) == "cell d/m/r16/bs16-x: failed (TrainValueError: no)"


def test_the_console_leaves_rule_blocks_to_the_log_file_and_cuts_long_lines():
    logger = logging.getLogger("tlsweep-test-console")
    console, log = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(console), logging.StreamHandler(log)]
    handlers[0].name = "DefaultStreamHandler"  # Snakemake's console handler
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    quiet_console(logger)
    logger.warning("rule train:\n    reason: " + "x" * 3000, extra={"event": "job_info"})
    logger.warning("done\n" + "y" * 3000)
    assert console.getvalue().splitlines() == ["done", "y" * (LONGEST - 3) + "..."]
    assert "rule train:" in log.getvalue() and "y" * 3000 in log.getvalue()


def test_the_header_of_a_run_is_cut_before_the_run_starts_and_a_dry_run_lists_its_jobs_whole():
    """Snakemake prints its header (with a `Command:` line holding every path typed) before onstart."""
    logger = logging.getLogger("tlsweep-test-header")
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    handler.name = "DefaultStreamHandler"
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    short_header(logger)  # while the Snakefile is read
    logger.warning("SNAKEMAKE\n  Command: " + "p" * 3000, extra={"event": "workflow_started"})
    logger.warning("rule train:\n    reason: " + "x" * 3000, extra={"event": "job_info"})  # a dry run's job
    assert console.getvalue().splitlines() == ["SNAKEMAKE", ("  Command: " + "p" * 3000)[:LONGEST - 3] + "...",
                                               "rule train:", "    reason: " + "x" * 3000]
    quiet_console(logger)  # the run starts
    logger.warning("rule train:", extra={"event": "job_info"})
    logger.warning("z" * 3000)
    assert console.getvalue().splitlines()[-1] == "z" * (LONGEST - 3) + "..."
    assert len(handler.filters) == 1


def failing_study() -> dict:
    """Two grid cells that load but cannot train: at batch size 1 every batch is a single image, which
    training skips (batch norm cannot train on it), so the first epoch ends in a SplitTooSmallError."""
    config = tiny_study("all-failed")
    del config["pretrain"]
    config["datasets"] = {"digits-5to9": config["datasets"]["digits-5to9"]}
    config["grid"].update(batch_size=[1], weights=["none"])
    config["training"] = {"stages": [{"name": "all", "train": "all", "epochs": 1}]}
    return config


def console(result) -> str:
    return result.stdout + result.stderr


@pytest.mark.pipeline
def test_a_run_in_which_every_grid_cell_failed_exits_non_zero_and_names_them(tmp_path):
    configfile = write_config(tmp_path / "failing.yaml", failing_study())
    dry = snakemake(tmp_path, "-n", "--configfile", str(configfile))
    assert "grid cells:" not in console(dry)  # a dry run prints no summary

    result = snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile), check=False)
    assert result.returncode != 0, console(result)[-3000:]
    text = console(result)
    assert "all-failed: 2 grid cells: 0 ok, 2 failed" in text, text[-3000:]
    failed = re.findall(r"^  (\S+): SplitTooSmallError: the training split has", text, re.M)
    assert sorted(failed) == sorted(str(p.relative_to(tmp_path / "results/all-failed/cells")) for p in
                                    (tmp_path / "results/all-failed/cells").glob("*/*/*/*"))
    assert "no grid cell ended ok" in text
    # each training job said how it ended, in one line
    assert len(re.findall(r"^cell \S+: failed \(SplitTooSmallError", text, re.M)) == 2, text[-3000:]


def exploding_study() -> dict:
    """One grid cell that trains to the end with its loss exploded (`unstable`): Adam at 1e-2 for one epoch from
    scratch at 16 px (its test loss is in the thousands, the limit 11)."""
    config = tiny_study("exploded")
    del config["pretrain"]
    config["datasets"] = {"digits-012": {"source": "digits", "classes": [0, 1, 2]}}
    config["grid"].update(dataset=["digits-012"], batch_size=[64], optimizer=["adam"], weights=["none"])
    config["training"] = {"stages": [{"name": "all", "train": "all", "epochs": 1}], "deterministic": True}
    config["export"] = {"enabled": False}
    return config


@pytest.mark.pipeline
def test_a_run_in_which_every_grid_cell_ended_unstable_exits_non_zero(tmp_path):
    configfile = write_config(tmp_path / "exploded.yaml", exploding_study())
    result = snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile), check=False)
    text = console(result)
    summary = pd.read_csv(tmp_path / "results/exploded/tables/summary.csv")
    assert summary["status"].tolist() == ["unstable"], summary.to_dict("records")
    assert result.returncode != 0, text[-3000:]
    assert "exploded: 1 grid cells: 0 ok, 0 failed, 1 unstable" in text, text[-3000:]
    assert "error: no grid cell ended ok (1 unstable: their losses exploded; exploded has no result)" in text


@pytest.mark.pipeline
def test_a_finished_run_tells_its_story_in_short_lines(finished_tiny_study):
    workdir, configfile, result = finished_tiny_study
    text = console(result)
    ended = re.findall(r"^cell (\S+): ok, best val_accuracy 0\.\d{4} \(epoch \d+\), test_accuracy 0\.\d{4}, "
                       r"\d+(?:m\d\d)?s$", text, re.M)
    assert len(ended) == 5, text[-4000:]  # the pretrain cell and the 4 grid cells
    assert "tiny: 4 grid cells: 4 ok" in text
    assert re.search(r"^Recommendation \(.*\):$\n^  digits-5to9: ", text, re.M), text[-3000:]
    assert "Tables: results/tiny/tables/  Charts: results/tiny/charts/" in text
    assert "Shell command:" not in text and "rule train:" not in text and "    reason:" not in text


@pytest.mark.pipeline
def test_no_console_line_is_longer_than_300_characters_and_the_log_keeps_everything(finished_tiny_study, tmp_path):
    workdir, configfile, _ = copy_of_finished_tiny_study(finished_tiny_study, tmp_path / "copy")
    config = yaml.safe_load(configfile.read_text())
    config["training"]["stages"][1]["lr_factor"] = 0.02  # every grid cell's params change: its reason line is long
    write_config(configfile, config)
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    text = console(result)
    longest = max(text.splitlines(), key=len)
    assert len(longest) <= LONGEST, longest
    assert "tiny: 4 grid cells: 4 ok" in text
    log = snakemake_log(workdir)
    assert "rule train:" in log and "Params have changed since last execution" in log
    assert "tiny: 4 grid cells: 4 ok" in log  # the summary too
