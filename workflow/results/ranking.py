"""Ranking candidate models before fine-tuning, from their cached features: LogME and a linear probe.

LogME (You et al., ICML 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"):
per class, a Bayesian linear regression of the class's one-hot target y on the features F (N x D),
w ~ N(0, 1/alpha I), y | F, w ~ N(F w, 1/beta I). Its log evidence

    L(alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2 pi - beta/2 |F m - y|^2 - alpha/2 |m|^2
                     - 1/2 log |A|,   A = alpha I + beta F'F,   m = beta A^-1 F'y

is maximised over alpha and beta by MacKay's fixed point on the SVD of F (gamma = sum beta s^2 /
(alpha + beta s^2), alpha = gamma / |m|^2, beta = (N - gamma) / |F m - y|^2); the score is the mean over
classes of the maximum divided by N. The linear probe is scikit-learn's logistic regression on the
train features, its regularisation chosen on validation, its test accuracy with a Wilson interval.
Plain numpy, scipy and scikit-learn; no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from workflow.results.inference import wilson_interval

TOLERANCE = 1e-10  # the fixed point stops when alpha / beta moves less than this, relatively
MAX_ITERATIONS = 10_000
PROBE_CS = tuple(10.0 ** k for k in range(-4, 4))  # the probe's inverse regularisation strengths tried on val
PROBE_MAX_ITER = 2000


@dataclass(frozen=True)
class Spectrum:
    """What LogME needs of the features, computed once for every class: F's squared singular values, its
    left singular vectors, and its shape."""

    squares: np.ndarray  # s_i^2, the nonzero spectrum of F'F (length r = rank bound min(N, D))
    left: np.ndarray  # U, N x r
    n: int
    d: int


def spectrum(features: np.ndarray) -> Spectrum:
    """The thin SVD of the features (N x D, as float64)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or not len(features):
        raise ValueError(f"LogME needs an N x D matrix of features with N > 0, not shape {features.shape}")
    left, singular, _ = np.linalg.svd(features, full_matrices=False)
    return Spectrum(squares=singular ** 2, left=left, n=features.shape[0], d=features.shape[1])


@dataclass(frozen=True)
class Evidence:
    """One target's maximised log evidence (divided by N) and where it was reached."""

    value: float
    alpha: float
    beta: float
    iterations: int


def _terms(spec: Spectrum, projected: np.ndarray, residual: float, alpha: float, beta: float):
    """The posterior mean's squared norm, the squared error of its fit, and log |A|, in the SVD basis:
    `projected` is U'y, `residual` |y|^2 - |U'y|^2 (the part of y no feature reaches)."""
    shrunk = alpha + beta * spec.squares
    mean_sq = float(np.sum((beta * np.sqrt(spec.squares) * projected / shrunk) ** 2))
    error = float(np.sum((alpha * projected / shrunk) ** 2)) + residual
    log_det = float(np.sum(np.log(shrunk))) + (spec.d - len(spec.squares)) * math.log(alpha)
    return mean_sq, error, log_det


def log_evidence_at(spec: Spectrum, projected: np.ndarray, residual: float, alpha: float, beta: float) -> float:
    """L(alpha, beta) / N for one target, from its projection on the features' left singular vectors."""
    mean_sq, error, log_det = _terms(spec, projected, residual, alpha, beta)
    total = (spec.d / 2 * math.log(alpha) + spec.n / 2 * math.log(beta) - spec.n / 2 * math.log(2 * math.pi)
             - beta / 2 * error - alpha / 2 * mean_sq - log_det / 2)
    return total / spec.n


def maximise_evidence(spec: Spectrum, target: np.ndarray) -> Evidence:
    """The log evidence of `target` (length N) maximised over alpha and beta by the fixed point."""
    target = np.asarray(target, dtype=np.float64)
    projected = spec.left.T @ target
    residual = max(float(target @ target - projected @ projected), 0.0)
    alpha, beta = 1.0, 1.0
    for iteration in range(1, MAX_ITERATIONS + 1):
        mean_sq, error, _ = _terms(spec, projected, residual, alpha, beta)
        gamma = float(np.sum(beta * spec.squares / (alpha + beta * spec.squares)))
        new_alpha = gamma / max(mean_sq, np.finfo(float).tiny)
        new_beta = (spec.n - gamma) / max(error, np.finfo(float).tiny)
        if not (0 < new_alpha < math.inf and 0 < new_beta < math.inf):  # at a boundary (a target fitted exactly)
            break
        moved = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if moved < TOLERANCE:
            break
    return Evidence(log_evidence_at(spec, projected, residual, alpha, beta), alpha, beta, iteration)


def one_hot(labels: np.ndarray, classes: int | None = None) -> np.ndarray:
    """The labels as an N x K one-hot matrix (K: `classes`, default the largest label + 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    classes = int(labels.max()) + 1 if classes is None else classes
    return (labels[:, None] == np.arange(classes)[None, :]).astype(np.float64)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: the mean over classes of the one-hot target's maximised log evidence divided by N
    (classes: those present in `labels`)."""
    spec = spectrum(features)
    present = np.unique(np.asarray(labels, dtype=np.int64))
    targets = one_hot(labels)[:, present]
    return float(np.mean([maximise_evidence(spec, targets[:, k]).value for k in range(targets.shape[1])]))


@dataclass(frozen=True)
class ProbeResult:
    """A linear probe's chosen regularisation, its validation accuracy and its test accuracy with a Wilson
    interval."""

    c: float
    val_accuracy: float
    test_accuracy: float
    test_low: float
    test_high: float
    test_n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _probe(c: float, features: np.ndarray, labels: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=PROBE_MAX_ITER))
    return model.fit(features, labels)


def linear_probe(train: tuple, val: tuple, test: tuple, cs: tuple[float, ...] = PROBE_CS) -> ProbeResult:
    """Logistic regression on standardised train features, for each C of `cs`; the C with the best
    validation accuracy (the smallest, the most regularised, among ties) is scored on test.
    Each split: (features, labels)."""
    scored = []
    for c in cs:
        model = _probe(c, *train)
        scored.append((float(np.mean(model.predict(val[0]) == val[1])), -c, model))
    val_accuracy, negative_c, chosen = max(scored, key=lambda entry: entry[:2])
    correct = int(np.sum(chosen.predict(test[0]) == test[1]))
    n = len(test[1])
    low, high = wilson_interval(correct, n)
    return ProbeResult(c=-negative_c, val_accuracy=val_accuracy, test_accuracy=correct / n if n else math.nan,
                       test_low=low, test_high=high, test_n=n)


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's tau between two orders of the same models, with its p-value (scipy's, two-sided)."""

    tau: float
    p: float
    models: int


def rank_agreement(scores, fine_tuned) -> RankAgreement:
    """Kendall's tau between the models' scores and their fine-tuned results (NaN with fewer than two
    models that have both)."""
    scores, fine_tuned = np.asarray(scores, float), np.asarray(fine_tuned, float)
    both = np.isfinite(scores) & np.isfinite(fine_tuned)
    if both.sum() < 2:
        return RankAgreement(math.nan, math.nan, int(both.sum()))
    result = stats.kendalltau(scores[both], fine_tuned[both])
    return RankAgreement(float(result.statistic), float(result.pvalue), int(both.sum()))


def score_splits(splits: dict) -> dict:
    """A candidate's scores from its features ({split: (features, labels)}): LogME of the train split, the
    linear probe (chosen on val, confirmed on test), and the seconds each took."""
    import time

    started = time.perf_counter()
    score = logme(*splits["train"])
    logme_seconds = time.perf_counter() - started
    started = time.perf_counter()
    probe = linear_probe(splits["train"], splits["val"], splits["test"])
    return {"logme": score, "logme_seconds": logme_seconds, "probe": probe.to_dict(),
            "probe_seconds": time.perf_counter() - started,
            "counts": {split: int(len(labels)) for split, (_, labels) in splits.items()},
            "dim": int(splits["train"][0].shape[1])}
