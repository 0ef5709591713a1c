"""The regimes view: validation curves per training regime with each cell's trainable parameters."""

import json

from fakecells import make_study, write_cell
from test_charts import marks, title_text
from workflow.results.aggregate import collect
from workflow.results.charts import CHARTS, save_chart
from workflow.results.tables import regimes_table
from workflow.study.outputs import study_charts


def regime_study(tmp_path):
    study = make_study(tmp_path, weights=["imagenet", "none"], train=["head", "all"],
                       exclude=[{"weights": "none", "train": "head"}])
    counts = {("imagenet", "head"): 12_810, ("imagenet", "all"): 11_181_642, ("none", "all"): 11_181_642}
    for cell in study.grid_cells:
        stages = [{"name": "train", "train": cell.train, "trainable_parameters": counts[cell.weights, cell.train]}]
        write_cell(study, cell, epochs=5, best_epoch=3, stages=stages)
    return study


def test_regime_curves_draw_val_accuracy_and_loss_per_regime_with_trainable_counts(tmp_path):
    study = regime_study(tmp_path)
    assert "regime_curves" in study_charts(study)
    summary, histories = collect(study)
    assert sorted(summary["trainable_parameters"].tolist()) == [12_810, 11_181_642, 11_181_642]
    spec = CHARTS["regime_curves"](summary, histories).to_dict()
    assert "per epoch and training regime" in title_text(spec)
    fields = {encoding["y"]["field"] for kind, encoding, _ in marks(spec) if kind == "line"}
    assert fields == {"val_accuracy", "val_loss"}
    regimes = {row["regime"] for rows in spec["datasets"].values() for row in rows if "regime" in row}
    assert regimes == {"frozen (0.01 M trainable)", "fine-tuned (11.18 M trainable)",
                       "from scratch (11.18 M trainable)"}
    save_chart(CHARTS["regime_curves"](summary, histories), tmp_path / "charts", "regime_curves")
    assert "val_loss" in (tmp_path / "charts" / "regime_curves.html").read_text()
    table = regimes_table(summary).set_index("regime")
    assert table.loc["frozen", "trainable_parameters"] == 12_810


def test_a_study_with_one_regime_gets_no_regime_curves(tmp_path):
    assert "regime_curves" not in study_charts(make_study(tmp_path, batch_size=[16, 32]))


def test_cells_without_recorded_counts_still_draw(tmp_path):
    study = make_study(tmp_path, train=["head", "all"])
    for cell in study.grid_cells:
        write_cell(study, cell, epochs=3)
    summary, histories = collect(study)
    spec = CHARTS["regime_curves"](summary, histories).to_dict()
    assert {"frozen", "fine-tuned"} <= {row["regime"] for rows in spec["datasets"].values() for row in rows
                                       if "regime" in row}
    assert json.dumps(spec)
