"""Each warning fires on a study built to trigger it, with its numbers, and a clean study has none;
the aggregate command writes them into best.md and its log, the recommendation atop summary.md."""

import pandas as pd

from fakecells import find, make_study, mixed_study, study_config, write_cell
from fakepredictions import mask, write_run
from workflow.cli import main
from workflow.results.aggregate import collect, collect_cells
from workflow.results.caveats import caveats, study_statuses
from workflow.results.publish import aggregate_study
from workflow.results.recommend import LANDING
from workflow.results.stats import best_table, configurations


def warnings_of(study, selection=None) -> dict:
    """The study's warnings by kind (each kind's messages joined)."""
    summary, _, outcomes = collect_cells(study)
    configs = configurations(summary, selection, outcomes)
    found = {}
    for caveat in caveats(summary, configs, best_table(configs), selection):
        found[caveat.kind] = (found.get(caveat.kind, "") + " | " + caveat.line()).strip(" |")
    return found


def two_configs(path, axis: str, first: tuple, second: tuple, n_test: int = 300, n_val: int = 300, classes: int = 3):
    """Two configurations differing on `axis`, two seeds each: (value, test images right, validation images
    right); seed s gets s more test images right."""
    study = make_study(path, **{axis: [first[0], second[0]]}, seed=[0, 1])
    for value, test, val in (first, second):
        for seed in (0, 1):
            write_run(study, find(study, **{axis: value}, seed=seed), mask(n_test, test + seed), mask(n_val, val),
                      classes=classes)
    return study


def clean(tmp_path):
    """300 validation and test images (100 per class): sgd clearly best on both."""
    return two_configs(tmp_path, "optimizer", ("sgd", 280, 285), ("adam", 200, 240))


def test_a_clean_study_has_no_warning(tmp_path):
    assert warnings_of(clean(tmp_path)) == {}


def test_within_noise_of_the_runner_up(tmp_path):
    study = make_study(tmp_path, optimizer=["sgd", "adam"])
    write_run(study, find(study, optimizer="sgd"), mask(300, 240), mask(300, 270))
    write_run(study, find(study, optimizer="adam"), mask(300, 237), mask(300, 267))
    message = warnings_of(study)["within noise"]
    assert "the winner (optimizer=sgd) is within noise of the runner-up (optimizer=adam)" in message
    assert "validation accuracy 0.9000 vs 0.8900 (margin 0.0100)" in message
    assert "test accuracy 0.8000 [0.7511, 0.8413] vs 0.7900" in message and "McNemar exact p = 0.25" in message


def test_a_tie_on_validation_is_within_noise_too(tmp_path):
    study = two_configs(tmp_path, "optimizer", ("sgd", 280, 285), ("adam", 200, 285))
    assert "tied on validation" in warnings_of(study)["within noise"]


def test_no_better_than_chance(tmp_path):
    # 3 balanced classes: always answering one scores 1/3
    study = two_configs(tmp_path, "optimizer", ("sgd", 105, 285), ("adam", 60, 240))
    message = warnings_of(study)["chance"]
    assert "no better than chance: test accuracy 0.3517" in message and "against chance 0.3333" in message
    assert "chance" not in warnings_of(clean(tmp_path / "clean"))


def test_no_better_than_the_head_alone(tmp_path):
    study = two_configs(tmp_path, "train", ("all", 252, 285), ("head", 250, 270))
    message = warnings_of(study)["head only"]
    assert "the winner (train=all) is no better than training the head alone (train=head)" in message
    assert "paired bootstrap + Welch" in message
    worse_head = two_configs(tmp_path / "worse", "train", ("all", 280, 285), ("head", 200, 270))
    assert "head only" not in warnings_of(worse_head)


def test_a_split_too_small_to_separate_configurations(tmp_path):
    study = two_configs(tmp_path, "optimizer", ("sgd", 10, 130), ("adam", 6, 100), n_test=12, n_val=135)
    message = warnings_of(study)["small split"]
    assert "the test split has 12 images, 4 in its smallest class" in message
    assert "the validation split has 135 images, 45 in its smallest class" not in message  # 135 and 45: enough
    # 135 test images but 15 of the smallest of 9 classes
    three = two_configs(tmp_path / "few", "optimizer", ("sgd", 130, 290), ("adam", 100, 240), n_test=135, classes=9)
    assert "135 images, 15 in its smallest class" in warnings_of(three)["small split"]


def test_one_seed_only(tmp_path):
    study = make_study(tmp_path, optimizer=["sgd", "adam"])
    write_run(study, find(study, optimizer="sgd"), mask(300, 280), mask(300, 285))
    write_run(study, find(study, optimizer="adam"), mask(300, 200), mask(300, 240))
    assert set(warnings_of(study)) == {"one seed"}


def test_unstable_cells_are_flagged_and_never_recommended(tmp_path):
    study = clean(tmp_path)
    exploded = find(study, optimizer="adam", seed=1)
    write_run(study, exploded, mask(300, 290), mask(300, 299), test_loss=15465.0)  # best on validation
    summary = collect(study)[0].set_index("cell")
    assert summary.loc[exploded.id, "status"] == "unstable"
    assert summary.loc[exploded.id, "error"].startswith("unstable: test loss is 15465, above 11 (10 x ln 3")
    message = warnings_of(study)["unstable"]
    assert exploded.id in message and "left out of every mean and the recommendation" in message
    configs = configurations(collect(study)[0]).set_index("optimizer")
    assert configs.loc["adam", "n_ok"] == 1 and configs.loc["sgd", "rank"] == 1


def test_a_non_finite_validation_loss_is_unstable(tmp_path):
    study = clean(tmp_path)
    cell = find(study, optimizer="sgd", seed=0)
    history = study.cell_dir(cell.id) / "history.csv"
    frame = pd.read_csv(history)
    frame.loc[1, "val_loss"] = float("nan")
    frame.to_csv(history, index=False)
    summary = collect(study)[0].set_index("cell")
    assert summary.loc[cell.id, "status"] == "unstable"
    assert summary.loc[cell.id, "error"] == "unstable: validation loss at epoch 2 is nan"


def test_a_finite_validation_loss_spike_is_not_unstable(tmp_path):
    study = clean(tmp_path)
    cell = find(study, optimizer="sgd", seed=0)
    history = study.cell_dir(cell.id) / "history.csv"
    frame = pd.read_csv(history)
    frame["val_loss"] = 500.0  # batch-norm statistics lagging behind the weights, say
    frame.to_csv(history, index=False)
    assert collect(study)[0].set_index("cell").loc[cell.id, "status"] == "ok"


def test_cells_without_predictions(tmp_path):
    study = clean(tmp_path)
    write_cell(study, find(study, optimizer="adam", seed=0), test_accuracy=0.6, best_val_accuracy=0.7)
    (study.cell_dir(find(study, optimizer="adam", seed=0).id) / "predictions.npz").unlink()
    message = warnings_of(study)["no predictions"]
    assert "1 of 4 ok cells have no readable predictions.npz (missing)" in message


def test_a_selection_that_cannot_be_used(tmp_path):
    study = clean(tmp_path)  # three classes: no validation AUC
    assert "ranked on validation accuracy instead" in warnings_of(study, "val_auc")["selection"]
    assert warnings_of(study, "val_accuracy") == {}


def test_validation_and_test_disagree(tmp_path):
    study = two_configs(tmp_path, "optimizer", ("sgd", 210, 270), ("adam", 270, 255))
    message = warnings_of(study)["validation and test disagree"]
    assert "optimizer=adam is better than the winner (optimizer=sgd) on test: test accuracy 0.9017 vs 0.7017" in message


def test_aggregate_writes_the_recommendation_and_the_warnings(tmp_path, study_file, capsys):
    study = make_study(tmp_path, optimizer=["sgd", "adam"])
    write_run(study, find(study, optimizer="sgd"), mask(12, 9), mask(12, 11))
    write_run(study, find(study, optimizer="adam"), mask(12, 9, start=3), mask(12, 10))
    config = study_file(study_config(tmp_path, optimizer=["sgd", "adam"]))
    assert main(["aggregate", "--configfile", str(config)]) == 0
    log = capsys.readouterr().out
    tables = study.out / "tables"
    best_md, summary_md = (tables / "best.md").read_text(), (tables / "summary.md").read_text()
    recommendation = ("- **d1**: resnet18, optimizer=sgd: validation accuracy 0.9167; test accuracy 0.7500, "
                      "Wilson 95 % [0.4677, 0.9111] on 12 test images; indistinguishable on test: 1 other (optimizer=adam).")
    assert best_md.startswith("## Recommendation\n") and recommendation in best_md
    assert summary_md.startswith("## Recommendation\n") and recommendation in summary_md
    assert "## Warnings (4)" in best_md and "**one seed**" in best_md and "**small split**, d1" in best_md
    assert "**within noise**, d1 (overall)" in best_md and "McNemar exact p = 1" in best_md
    assert "warning: d1: the test split has 12 images, 4 in its smallest class" in log
    assert recommendation in log
    page = (tables / "best.html").read_text()
    assert '<template id="tlsweep-landing">' in page and "4 warnings" in page and "<h3>Warnings (4)</h3>" in page


def failed_study(tmp_path):
    """Two cells that both failed, each with its error (the first line is what matters)."""
    study = make_study(tmp_path, batch_size=[16, 64])
    for cell, error in zip(study.grid_cells, ["CellError: resnet18 needs 32 px\nat stage head", "OSError: disk full"]):
        write_cell(study, cell, status="failed", test_accuracy=None, epochs=0, error=error)
    return study


def test_study_statuses_count_each_state_and_name_each_cell_that_did_not_end_ok(tmp_path):
    study = mixed_study(tmp_path)
    found = study_statuses(study)
    assert found.counts == {"ok": 8, "failed": 2, "diverged": 1, "oom": 1, "unstable": 0, "damaged": 0}
    failures = {failure.cell: (failure.status, failure.error) for failure in found.failures}
    assert failures[find(study, dataset="d2", batch_size=16, seed=1).id] == (
        "failed", "no metrics.json; the log ends: RuntimeError: boom")
    assert failures[find(study, dataset="d2", batch_size=16, seed=2).id] == ("failed", "no metrics.json and no log: not run")
    assert failures[find(study, dataset="d1", batch_size=64, seed=2).id] == ("diverged", "training loss not finite at epoch 3")
    assert failures[find(study, dataset="d2", batch_size=16, seed=0).id][0] == "oom"
    assert found.headline() == "4 of 12 cells did not end ok (2 failed, 1 diverged, 1 oom)"


def test_best_md_says_plainly_that_nothing_is_recommended_because_every_cell_failed(tmp_path, capsys):
    study = failed_study(tmp_path)
    aggregate_study(study)
    best_md = (study.out / "tables/best.md").read_text()
    first, *rest = best_md.splitlines()
    assert first == "> **Nothing to recommend: every cell failed** (none of the 2 cells ended `ok`: 2 failed). First errors:"
    assert f"> - `{study.grid_cells[0].id}`: failed: CellError: resnet18 needs 32 px" in rest
    assert f"> - `{study.grid_cells[1].id}`: failed: OSError: disk full" in rest
    assert "at stage head" not in best_md and "## Warnings (0)" not in best_md and "**failed cells**" in best_md
    assert (study.out / "tables/summary.md").read_text().startswith(first)
    assert "warning: nothing to recommend: every cell failed" in capsys.readouterr().out


def test_best_md_and_the_report_lead_with_the_cells_that_did_not_end_ok(tmp_path):
    study = mixed_study(tmp_path)
    aggregate_study(study, log=lambda message: None)
    best_md = (study.out / "tables/best.md").read_text()
    assert best_md.startswith("> **Warning: 4 of 12 cells did not end ok** (2 failed, 1 diverged, 1 oom)")
    failed = find(study, dataset="d2", batch_size=16, seed=1).id
    assert f"> - `{failed}`: failed: no metrics.json; the log ends: RuntimeError: boom" in best_md
    page = (study.out / "tables/best.html").read_text()
    landing = page.split(LANDING)[1].split("</template>")[0]
    assert landing.startswith("<p class='warning'><strong>Warning: 4 of 12 cells did not end ok</strong>")
    assert "diverged: training loss not finite at epoch 3</li>" in landing and "and 2 more: the summary" in landing
    assert page.split("</template>")[1].lstrip().startswith("<p class='warning'><strong>Warning: 4 of 12 cells")
    assert "`" not in page and f"<code>{failed}</code>" in page and "<code>selection</code>" in page  # no literal backticks
