"""The docs' recovery instructions, executed as the docs write them, on a copy of the finished tiny study."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, copy_of_finished_tiny_study, snakemake, snakemake_log

pytestmark = pytest.mark.pipeline

CELL = "digits-5to9/resnet18/r16/bs32-lr1e-2-adam-all-s0-wbase"


def docs_commands(page: str, after: str) -> list[str]:
    """The command lines of the first ```bash block after the line of docs/`page` that holds `after`."""
    text = (REPO / "docs" / page).read_text()
    start = text.index(after)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, f"no ```bash block after {after!r} in docs/{page}"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def run_docs_commands(lines: list[str], workdir: Path, configfile: Path, **values: str) -> list[str]:
    """Run `lines` in `workdir` as a user would (`snakemake` is this repo's Snakefile, `rm` removes, `python
    -m workflow` is this package), with `studies/<study>.yaml` the study file and `<key>` each of `values`;
    returns each command's output."""
    outputs = []
    for line in lines:
        line = line.replace("studies/<study>.yaml", str(configfile))
        for key, value in values.items():
            line = line.replace(f"<{key}>", value)
        words = shlex.split(line, comments=True)
        assert "<" not in " ".join(words), f"a placeholder the test does not know: {line}"
        if words[0] == "rm":
            for name in words[1:]:
                (workdir / name).unlink()
            outputs.append("")
        elif words[0] == "snakemake":
            result = snakemake(workdir, *words[1:])
            outputs.append(result.stdout + result.stderr)
        elif words[:3] == ["python", "-m", "workflow"]:
            result = subprocess.run([sys.executable, *words[1:]], cwd=workdir, capture_output=True, text=True,
                                    check=True, timeout=600)
            outputs.append(result.stdout + result.stderr)
        else:
            raise AssertionError(f"a command the test cannot run: {line}")
    return outputs


def status_of(workdir: Path, configfile: Path) -> dict[str, tuple[str, str]]:
    """{cell: (state, note)} as `python -m workflow status` prints them."""
    from workflow.sweep.decisions import load_sweep
    from workflow.track.status import status_table

    study = load_sweep(configfile).study
    table = status_table(study)
    return {row.cell: (row.state, row.note) for row in table.itertuples()}


@pytest.fixture
def tiny_copy(finished_tiny_study, tmp_path):
    workdir, configfile, _ = copy_of_finished_tiny_study(finished_tiny_study, tmp_path / "tiny")
    return workdir, configfile


def test_a_damaged_metrics_json_is_redone_by_the_docs_commands_and_reported_ok(tiny_copy, monkeypatch):
    workdir, configfile = tiny_copy
    monkeypatch.chdir(workdir)  # the study's results_dir is relative
    metrics = workdir / "results/tiny/cells" / CELL / "metrics.json"
    metrics.write_text('{"status": "ok", "cell"')  # cut short
    snakemake(workdir, "--configfile", str(configfile))  # the tables are made again and list it as damaged
    summary = pd.read_csv(workdir / "results/tiny/tables/summary.csv").set_index("cell")
    assert summary.loc[CELL, "status"] == "damaged"
    state, note = status_of(workdir, configfile)[CELL]
    assert state == "damaged" and "metrics.json is damaged" in note, (state, note)

    run_docs_commands(docs_commands("training.md", "**A cell's `metrics.json` or `history.csv`**"), workdir,
                      configfile, study="tiny", **{"cell id": CELL})
    assert json.loads(metrics.read_text())["status"] == "ok"
    summary = pd.read_csv(workdir / "results/tiny/tables/summary.csv").set_index("cell")
    assert (summary["status"] == "ok").all(), summary["status"]
    assert status_of(workdir, configfile)[CELL][0] == "done"
    assert "Nothing to be done" in snakemake(workdir, "-n", "--configfile", str(configfile)).stdout


def test_a_lost_history_csv_is_redone_by_a_plain_run(tiny_copy):
    workdir, configfile = tiny_copy
    history = workdir / "results/tiny/cells" / CELL / "history.csv"
    history.unlink()
    result = snakemake(workdir, "--configfile", str(configfile))
    assert history.exists() and snakemake_log(workdir).count("rule train:") == 1, result.stderr[-3000:]
    summary = pd.read_csv(workdir / "results/tiny/tables/summary.csv").set_index("cell")
    assert (summary["status"] == "ok").all(), summary["status"]


def test_the_upgrade_commands_mark_finished_outputs_up_to_date(tiny_copy):
    workdir, configfile = tiny_copy
    shutil.rmtree(workdir / ".snakemake/metadata")  # as after rules whose commands changed: every job re-runs
    assert "train" in snakemake(workdir, "-n", "--configfile", str(configfile)).stdout
    outputs = run_docs_commands(docs_commands("training.md", "mark the finished outputs as up to date"),
                                workdir, configfile, study="tiny")
    assert "Nothing to be done" in outputs[-1]


def test_a_damaged_shard_written_again_by_the_docs_commands_retrains_nothing(tiny_copy):
    from workflow.data.shard_check import damaged

    from workflow.sweep.decisions import load_sweep

    workdir, configfile = tiny_copy
    key = load_sweep(configfile).study.data_key("digits-5to9")
    manifest = workdir / "results/data" / key / "r16.json"
    shard = workdir / "results/data" / key / "r16/shard-0-of-1.h5"
    before = manifest.read_bytes()
    damaged(shard, manifest, ValueError("a test"))  # what a training job does with a shard that fails its check
    outputs = run_docs_commands(docs_commands("training.md", "- **Shards**"), workdir, configfile, study="tiny",
                                data_dir="results/data", **{"data key": key}, resolution="16")
    assert shard.exists() and manifest.read_bytes() == before
    assert "Nothing to be done" in outputs[-1], outputs[-1][-3000:]


def test_a_damaged_shard_written_again_by_a_plain_run_trains_no_finished_cell_again(tiny_copy):
    """Issue 27, item 4: the run that writes the shard and its manifest again (for a cell still to do)
    runs the finished cells that read them again (their input is newer), which write their outputs
    again without training."""
    from workflow.data.shard_check import damaged

    from workflow.sweep.decisions import load_sweep

    workdir, configfile = tiny_copy
    study = load_sweep(configfile).study
    manifest = workdir / "results/data" / study.data_key("digits-5to9") / "r16.json"
    before = {cell.id: json.loads((workdir / study.cell_dir(cell.id) / "metrics.json").read_text())
              for cell in study.grid_cells}
    damaged(manifest.parent / "r16/shard-0-of-1.h5", manifest, ValueError("a test"))
    assert "Nothing to be done" in snakemake(workdir, "-n", "--configfile", str(configfile)).stdout  # not needed yet
    to_do = study.grid_cells[0].id  # a cell that never finished: it needs the manifest
    (workdir / study.cell_dir(to_do) / "metrics.json").unlink()
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    console = result.stdout + result.stderr
    again = re.findall(r"^cell (\S+): ok, .*, written again without training$", console, re.M)
    assert sorted(again) == sorted(before), console[-3000:]
    for cell in study.grid_cells:
        redone = json.loads((workdir / study.cell_dir(cell.id) / "metrics.json").read_text())
        assert redone["run"]["written_again"] and redone["wall_time_s"] == before[cell.id]["wall_time_s"]
        for key in ("test_accuracy", "test_loss", "best_epoch", "best_val_accuracy", "confusion_matrix"):
            assert redone[key] == before[cell.id][key], (cell.id, key)
    assert "tiny: 4 grid cells: 4 ok" in console
