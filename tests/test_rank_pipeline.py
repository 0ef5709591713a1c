"""Rank-then-tune end to end on digits (`rank: {keep: k}`, docs/ranking.md): three small backbones' features are
scored, the best is fine-tuned, and raising `keep` fine-tunes the next one without training the first again."""

import json
import math

import pandas as pd
import pytest

from conftest import snakemake, tiny_study, write_config
from test_workflow import job_counts

MODELS = ["resnet18", "mobilenet_v2", "timm:resnet10t"]


def rank_study(keep: int) -> dict:
    config = tiny_study("rank")
    del config["pretrain"]
    config["grid"].update(model=MODELS, batch_size=[32], optimizer=["adam"], weights=["none"])
    config["training"]["stages"] = [{"name": "head", "train": "head", "epochs": 1},
                                    {"name": "finetune", "train": "cell", "epochs": 1, "lr_factor": 0.1}]
    config["rank"] = {"by": "logme", "keep": keep}
    config["export"] = {"enabled": False}
    return config


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """The study with keep 1: its dry run before anything ran, then the run."""
    workdir = tmp_path_factory.mktemp("rank")
    configfile = write_config(workdir / "rank.yaml", rank_study(1))
    dry = snakemake(workdir, "-n", "--configfile", str(configfile))
    snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    return workdir, dry


def tables(workdir) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = workdir / "results" / "rank" / "tables"
    return pd.read_csv(folder / "models.csv"), pd.read_csv(folder / "summary.csv")


@pytest.mark.pipeline
def test_a_dry_run_shows_the_ranking_jobs_and_no_training(ranked):
    _, dry = ranked
    counts = job_counts(dry.stdout)
    assert counts["features"] == counts["rank_model"] == 3 and counts["choose_models"] == 1, counts
    assert "train" not in counts, counts
    assert "rank-then-tune: the best 1 of 3 models by logme" in dry.stderr


@pytest.mark.pipeline
def test_only_the_best_model_by_logme_is_fine_tuned_and_the_table_says_so(ranked):
    from workflow.data.features import read_features
    from workflow.results.ranking import logme

    workdir, _ = ranked
    models, summary = tables(workdir)
    assert sorted(models["model"]) == sorted(MODELS)
    best = models.loc[models["logme"].idxmax(), "model"]
    assert models.set_index("model")["chosen"].to_dict() == {model: model == best for model in MODELS}
    assert set(summary["model"]) == {best} and (summary["status"] == "ok").all()
    tuned = models.set_index("model")["fine_tuned_val_accuracy"]
    assert tuned[best] == summary["best_val_accuracy"].max() and tuned.drop(best).isna().all()
    assert (models["probe_test_low"] <= models["probe_test_accuracy"]).all()
    assert (models["probe_test_accuracy"] <= models["probe_test_high"]).all()
    assert (models["feature_time_s"] > 0).all() and models["logme_tau"].isna().all()  # one model fine-tuned
    features = sorted((workdir / "results" / "data").glob("*/features/resnet18/r16/none.h5"))
    assert len(features) == 1  # the features file the contract names, its score recomputed here
    assert models.set_index("model").loc["resnet18", "logme"] == pytest.approx(
        logme(*read_features(features[0])["train"]), rel=1e-9)
    chart = workdir / "results" / "rank" / "charts" / "models.html"
    assert chart.exists() and "LogME" in chart.read_text()


@pytest.mark.pipeline
def test_raising_keep_trains_the_next_model_and_keeps_the_first(ranked):
    workdir, _ = ranked
    first = next((workdir / "results" / "rank" / "cells").rglob("metrics.json"))
    before = first.stat().st_mtime_ns
    configfile = write_config(workdir / "rank2.yaml", rank_study(2))
    counts = job_counts(snakemake(workdir, "-n", "--configfile", str(configfile)).stdout)
    assert counts.get("features", 0) == counts.get("rank_model", 0) == 0 and counts["choose_models"] == 1, counts
    snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    models, summary = tables(workdir)
    chosen = set(models.loc[models["chosen"], "model"])
    assert chosen == set(models.nlargest(2, "logme")["model"]) and set(summary["model"]) == chosen
    assert first.stat().st_mtime_ns == before  # the first model's cell was not trained again
    tau = models["logme_tau"].dropna().unique()
    assert len(tau) == 1 and abs(tau[0]) == 1 and models["logme_tau_p"].dropna().iloc[0] == 1.0  # two models
    choice = json.loads(next((workdir / "results" / "rank" / "rank").glob("chosen-logme-top2-*.json")).read_text())
    assert [entry["model"] for entry in choice["groups"][0]["ranked"]][:2] == list(
        models.sort_values("logme", ascending=False)["model"][:2])
    assert not any(math.isnan(entry["score"]) for entry in choice["groups"][0]["ranked"])
