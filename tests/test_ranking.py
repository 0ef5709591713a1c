"""LogME, the linear probe and the rank agreement (workflow/results/ranking.py), on small problems whose
answer is known another way: the evidence maximised directly, and features whose class separation we set."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from workflow.results.inference import wilson_interval
from workflow.results.ranking import (linear_probe, log_evidence_at, logme, maximise_evidence, one_hot,
                                      rank_agreement, spectrum)


def direct_log_evidence(features, target, log_alpha, log_beta):
    """log p(y | F, alpha, beta) / N straight from its definition: y ~ N(0, F F'/alpha + I/beta)."""
    n = len(target)
    covariance = features @ features.T / math.exp(log_alpha) + np.eye(n) / math.exp(log_beta)
    return stats.multivariate_normal(np.zeros(n), covariance).logpdf(target) / n


def direct_maximum(features, target):
    """The same log evidence maximised over log alpha, log beta by scipy (Nelder-Mead from several starts)."""
    best = None
    for start in ((0.0, 0.0), (3.0, -2.0), (-3.0, 3.0)):
        found = optimize.minimize(lambda x: -direct_log_evidence(features, target, *x), start,
                                  method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
        best = found if best is None or found.fun < best.fun else best
    return -best.fun, best.x


def separated(rng, separation, n=300, d=16, classes=4):
    """Features whose class means lie `separation` apart (in units of the noise) in a random direction."""
    labels = np.arange(n) % classes
    means = rng.standard_normal((classes, d))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return separation * means[labels] + rng.standard_normal((n, d)), labels


@pytest.mark.parametrize("n, d", [(40, 5), (30, 60), (25, 25)])
def test_the_fixed_point_reaches_the_direct_maximum_of_the_same_evidence(n, d):
    rng = np.random.default_rng(n * d)
    features = rng.standard_normal((n, d))
    target = features @ rng.standard_normal(d) * 0.5 + rng.standard_normal(n)  # the model's own kind of data
    found = maximise_evidence(spectrum(features), target)
    maximum, (log_alpha, log_beta) = direct_maximum(features, target)
    assert found.value == pytest.approx(maximum, abs=1e-7)
    assert (math.log(found.alpha), math.log(found.beta)) == (pytest.approx(log_alpha, abs=1e-3),
                                                             pytest.approx(log_beta, abs=1e-3))


@pytest.mark.parametrize("n, d", [(40, 5), (30, 60)])
def test_on_one_hot_targets_too_the_fixed_point_reaches_the_direct_maximum(n, d):
    rng = np.random.default_rng(n + d)
    features = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3
    target = np.where(features[:, 0] > 0, 1.0, one_hot(rng.integers(0, 3, n), 3)[:, 1])
    assert maximise_evidence(spectrum(features), target).value == pytest.approx(direct_maximum(features, target)[0],
                                                                                 abs=1e-7)


def test_the_svd_evidence_is_the_marginal_density_anywhere():
    rng = np.random.default_rng(1)
    features, target = rng.standard_normal((20, 30)), rng.standard_normal(20)
    projected = spectrum(features).left.T @ target
    residual = target @ target - projected @ projected
    for log_alpha, log_beta in [(-2.0, 1.0), (0.5, -0.5), (3.0, 2.0)]:
        assert log_evidence_at(spectrum(features), projected, residual, math.exp(log_alpha), math.exp(log_beta)) \
            == pytest.approx(direct_log_evidence(features, target, log_alpha, log_beta), abs=1e-10)


def test_logme_is_the_mean_over_classes_of_each_one_hot_targets_evidence():
    rng = np.random.default_rng(2)
    features, labels = separated(rng, 2.0, n=60, d=8, classes=3)
    each = [direct_maximum(features, (labels == k).astype(float))[0] for k in range(3)]
    assert logme(features, labels) == pytest.approx(np.mean(each), abs=1e-6)


def test_better_separated_features_score_higher_by_logme_and_by_the_probe():
    rng = np.random.default_rng(3)
    separations = [0.0, 0.5, 1.5, 4.0]
    scores, probes = [], []
    for separation in separations:
        features, labels = separated(rng, separation)
        scores.append(logme(features, labels))
        split = (features[:150], labels[:150]), (features[150:225], labels[150:225]), (features[225:], labels[225:])
        probes.append(linear_probe(*split).test_accuracy)
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    assert rank_agreement(scores, separations).tau == pytest.approx(1.0)
    assert probes[0] < 0.5 < 0.9 < probes[-1]  # chance is 0.25 with four classes


def test_logme_does_not_reward_more_dimensions_of_noise():
    rng = np.random.default_rng(4)
    features, labels = separated(rng, 3.0)
    padded = np.hstack([features, rng.standard_normal((len(labels), 200))])
    assert logme(padded, labels) < logme(features, labels)


def test_the_probe_chooses_c_on_validation_and_reports_test_with_a_wilson_interval():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    features, labels = separated(rng, 1.0, n=400)
    train, val, test = [(features[a:b], labels[a:b]) for a, b in [(0, 200), (200, 300), (300, 400)]]
    cs = (1e-3, 1e-1, 10.0)
    result = linear_probe(train, val, test, cs)
    val_scores = {c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(*train).score(*val)
                  for c in cs}
    assert result.val_accuracy == max(val_scores.values())
    assert result.c == min(c for c, score in val_scores.items() if score == result.val_accuracy)
    chosen = make_pipeline(StandardScaler(), LogisticRegression(C=result.c, max_iter=2000)).fit(*train)
    correct = int((chosen.predict(test[0]) == test[1]).sum())
    assert result.test_accuracy == correct / 100 and result.test_n == 100
    assert (result.test_low, result.test_high) == wilson_interval(correct, 100)


def test_rank_agreement_is_scipys_kendall_tau_and_nan_below_two_models():
    found = rank_agreement([3.0, 1.0, 2.0, np.nan], [0.9, 0.7, 0.6, 0.8])
    expected = stats.kendalltau([3.0, 1.0, 2.0], [0.9, 0.7, 0.6])
    assert (found.tau, found.p, found.models) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue), 3)
    assert math.isnan(rank_agreement([1.0], [0.5]).tau)


def test_logme_stays_finite_where_the_features_fit_every_target_exactly():
    rng = np.random.default_rng(0)  # fewer images than dimensions, in float32 (as a features file holds them)
    means = rng.standard_normal((10, 512))
    labels = rng.integers(0, 10, 90)
    features = (means[labels] + rng.standard_normal((90, 512))).astype(np.float32)
    assert math.isfinite(logme(features, labels))


def test_logme_refuses_no_features():
    with pytest.raises(ValueError, match="N x D"):
        logme(np.zeros((0, 4)), np.zeros(0, int))


# Rank-then-tune's study side: the candidates, the choice and the grid it leaves (no Snakemake).

def rank_config(tmp_path, keep=None, by="logme", models=("resnet18", "mobilenet_v2", "shufflenet_v2_x0_5")):
    from conftest import tiny_study

    config = tiny_study("rank")
    config["results_dir"] = str(tmp_path / "results")
    config["grid"]["model"] = list(models)
    config["rank"] = {"by": by, **({"keep": keep} if keep else {})}
    return config


def choose_with(config, scores: dict):
    """The study after its choice was made from {model: (logme, probe val accuracy)}, and the choice."""
    import json as json_module

    from workflow.core import paths
    from workflow.study.config import check_config
    from workflow.sweep.decisions import SweepState
    from workflow.sweep.model_choice import choose

    check_config(config)
    sweep = SweepState(config)
    study = sweep.study
    files = {c.id: {"logme": scores[c.model][0], "probe": {"val_accuracy": scores[c.model][1]}}
             for c in study.ranking.candidates}
    choice = choose(study.ranking, files)
    path = paths.model_choice_file(study.out, study.ranking.choice_name())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json_module.dumps(choice))
    sweep.know_choice()
    return sweep.study, choice


SCORES = {"resnet18": (-0.5, 0.80), "mobilenet_v2": (-0.7, 0.95), "shufflenet_v2_x0_5": (-0.6, 0.90)}


def test_before_the_choice_every_candidate_is_in_the_grid_and_after_it_the_best_keep(tmp_path):
    from workflow.study.config import check_config
    from workflow.sweep.decisions import SweepState

    config = rank_config(tmp_path, keep=2)
    check_config(config)
    before = SweepState(config).study
    assert {cell.model for cell in before.grid_cells} == set(SCORES) and not before.models_chosen
    after, choice = choose_with(config, SCORES)
    assert after.models_chosen and choice["groups"][0]["chosen"] == ["resnet18", "shufflenet_v2_x0_5"]
    assert {cell.model for cell in after.grid_cells} == {"resnet18", "shufflenet_v2_x0_5"}
    assert [c.id for c in after.candidate_cells] == [c.id for c in before.grid_cells]
    assert not any("mobilenet_v2" in cell_id for cell_id in after.grid_ids)
    upstream = {cell_id for cell_id in after.cells if after.is_pretrain(cell_id)}
    assert {cell_id.split("/")[1] for cell_id in upstream} == set(SCORES)  # every candidate's features need it
    with pytest.raises(ValueError, match="is not a grid cell"):
        after.cell(next(c.id for c in before.grid_cells if c.model == "mobilenet_v2"), pretrain=False)


def test_by_probe_chooses_on_the_probes_validation_accuracy(tmp_path):
    study, choice = choose_with(rank_config(tmp_path, keep=1, by="probe"), SCORES)
    assert choice["groups"][0]["chosen"] == ["mobilenet_v2"]
    assert [entry["model"] for entry in choice["groups"][0]["ranked"]] == ["mobilenet_v2", "shufflenet_v2_x0_5", "resnet18"]


def test_raising_keep_keeps_the_earlier_cells_and_reads_a_choice_of_its_own(tmp_path):
    from workflow.study.config import check_config
    from workflow.sweep.decisions import SweepState

    one, _ = choose_with(rank_config(tmp_path, keep=1), SCORES)
    config = rank_config(tmp_path, keep=2)
    check_config(config)
    assert not SweepState(config).study.models_chosen  # keep 1's file is not keep 2's
    two, _ = choose_with(config, SCORES)
    assert one.grid_ids < two.grid_ids
    assert one.ranking.choice_name() != two.ranking.choice_name()


def test_ties_and_missing_scores_are_ordered_by_name_and_last():
    from workflow.study.model_ranking import Candidate, Ranking
    from workflow.sweep.model_choice import choose

    candidates = tuple(Candidate("d", model, 32, "none") for model in ("c", "b", "a"))
    scores = {candidates[0].id: {"logme": float("nan")}, candidates[1].id: {"logme": 1.0},
              candidates[2].id: {"logme": 1.0}}
    group = choose(Ranking("logme", 2, candidates), scores)["groups"][0]
    assert [entry["model"] for entry in group["ranked"]] == ["a", "b", "c"] and group["chosen"] == ["a", "b"]
    assert group["ranked"][-1]["score"] is None


def test_rank_keep_is_for_a_plain_grid(tmp_path):
    from workflow.study.config import ConfigError, check_config
    from workflow.sweep.decisions import SweepState

    config = rank_config(tmp_path, keep=1)
    config["search"] = "halving"
    check_config(config)
    with pytest.raises(ConfigError, match=r"^rank\.keep: rank-then-tune chooses the models of a plain grid"):
        SweepState(config)


def test_a_damaged_choice_file_is_one_line_naming_it(tmp_path):
    from workflow.core import paths
    from workflow.study.config import check_config
    from workflow.sweep.decisions import SweepState

    config = rank_config(tmp_path, keep=1)
    check_config(config)
    study = SweepState(config).study
    path = Path(paths.model_choice_file(study.out, study.ranking.choice_name()))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"^{path} is not a choice of models"):
        SweepState(config)


def write_features(path: Path, splits: dict) -> None:
    """A features file and its record as the contract lays them out (docs/ranking.md, workflow/data/features.py)."""
    import json as json_module

    import h5py

    from workflow.core.paths import features_record
    from workflow.integrity import sha256_of

    with h5py.File(path, "w") as f:
        for name, (features, labels) in splits.items():
            f.create_group(name).create_dataset("features", data=features.astype(np.float16))
            f[name].create_dataset("labels", data=labels.astype(np.int64))
        f.attrs.update(model="resnet18", resolution=16, weights="none", precision="fp16", dim=16)
    record = {"sha256": sha256_of(path), "counts": {name: len(labels) for name, (_, labels) in splits.items()},
              "dim": 16, "seconds": 2.5, "images_per_s": 480.0}
    Path(features_record(path)).write_text(json_module.dumps(record))


def test_the_rank_model_command_scores_a_features_file_and_refuses_a_damaged_one(tmp_path):
    import json as json_module
    import subprocess
    import sys

    from conftest import REPO

    rng = np.random.default_rng(6)
    features, labels = separated(rng, 2.0, n=240)
    splits = {"train": (features[:120], labels[:120]), "val": (features[120:180], labels[120:180]),
              "test": (features[180:], labels[180:])}
    path, out = tmp_path / "none.h5", tmp_path / "scores" / "none.json"
    write_features(path, splits)
    command = [sys.executable, "-m", "workflow", "rank-model", "--features", str(path), "--out", str(out)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    scores = json_module.loads(out.read_text())
    stored = {name: (f.astype(np.float16).astype(np.float32), y) for name, (f, y) in splits.items()}
    assert scores["logme"] == pytest.approx(logme(*stored["train"]), rel=1e-12)
    assert scores["probe"] == linear_probe(stored["train"], stored["val"], stored["test"]).to_dict()
    assert scores["features"]["seconds"] == 2.5 and scores["counts"] == {"train": 120, "val": 60, "test": 60}
    with open(path, "r+b") as f:  # one byte changed: the record's SHA-256 no longer matches
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    failed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert failed.returncode != 0 and f"{path} is damaged" in failed.stderr.strip().splitlines()[-1]


def test_a_damaged_score_file_stops_the_choice_and_the_models_table_naming_it(tmp_path):
    import pandas as pd

    from workflow.core import paths
    from workflow.results.models_table import models_table
    from workflow.study.config import check_config
    from workflow.sweep.decisions import SweepState
    from workflow.sweep.model_choice import choose_models

    config = rank_config(tmp_path, keep=2)
    check_config(config)
    study = SweepState(config).study
    candidate = study.ranking.candidates[0]
    path = Path(paths.score_file(study.out, candidate.id))
    path.parent.mkdir(parents=True)
    path.write_text('{"logme": ')  # cut short
    message = rf"^{path} cannot be read \(JSONDecodeError: .*\); delete it and run again to score {candidate.id} again$"
    with pytest.raises(ValueError, match=message):
        choose_models(study, log=lambda _: None)
    with pytest.raises(ValueError, match=message):
        models_table(study, pd.DataFrame(columns=["status"]))
