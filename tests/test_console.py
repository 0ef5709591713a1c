"""What a run shows on the console: one short line per training job, the story at its end (cells by
state, the failed ones, the recommendation, where the tables are), and a non-zero exit when no grid cell
ended `ok` (docs/monitoring.md, "The console")."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import copy_of_finished_tiny_study, snakemake, tiny_study, write_config

pytestmark = pytest.mark.pipeline

LONGEST = 300  # characters of a console line


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
    log = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
    assert "rule train:" in log and "Params have changed since last execution" in log
    assert "tiny: 4 grid cells: 4 ok" in log  # the summary too
