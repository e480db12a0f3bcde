"""Operating-point metrics and bootstrap intervals: against scikit-learn / brute force, undefined
values as null with a note, the bootstrap seeded, stratified and sized as the contract says."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from robustlab.metrics import (
    MetricsRow,
    bootstrap_intervals,
    brier_score,
    ece_score,
    eer_score,
    fpr_at_tpr_score,
    metrics_row,
    row_from_correct,
    tpr_at_fpr_score,
)
from robustlab.reporting.tables import metrics_csv, metrics_markdown


def scored(n_neg: int, n_pos: int, seed: int = 0, *, decimals: int | None = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_neg, np.int64), np.ones(n_pos, np.int64)]
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.18), 0, 1)
    return y, (s.round(decimals) if decimals is not None else s)  # rounding makes ties


def brute_roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every threshold ``score >= t``, t over the distinct scores and +inf."""
    ts = np.r_[np.inf, np.unique(s)[::-1]]
    fpr = np.array([((s >= t) & (y == 0)).sum() / (y == 0).sum() for t in ts])
    tpr = np.array([((s >= t) & (y == 1)).sum() / (y == 1).sum() for t in ts])
    return fpr, tpr


@pytest.mark.parametrize("n_neg,n_pos", [(1500, 700), (400, 900)], ids=["more-negatives", "more-positives"])
def test_operating_points_agree_with_sklearn_and_brute_force(n_neg: int, n_pos: int):
    y, s = scored(n_neg, n_pos)
    fpr, tpr = brute_roc(y, s)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s)
    for target in (0.01, 0.001):
        got = tpr_at_fpr_score(y, s, fpr=target)
        if n_neg * target < 1:
            assert got is None
            continue
        assert got == pytest.approx(tpr[fpr <= target].max())
        assert got == pytest.approx(sk_tpr[sk_fpr <= target].max())
    assert fpr_at_tpr_score(y, s, tpr=0.95) == pytest.approx(fpr[tpr >= 0.95].min())
    eer = eer_score(y, s)
    # at the EER, FPR and FNR meet on the (linearly interpolated) ROC curve
    grid = np.linspace(0, 1, 200001)
    fnr_at = 1 - np.interp(grid, sk_fpr, sk_tpr)
    assert eer == pytest.approx(grid[np.argmin(np.abs(fnr_at - grid))], abs=1e-4)
    assert 0 < eer < 0.5


def test_brier_balanced_class_accuracies_agree_with_sklearn():
    y, s = scored(300, 200, decimals=None)
    row = metrics_row(y, s, threshold=0.5, set="clean")
    pred = (s >= 0.5).astype(int)
    assert row.brier == pytest.approx(skm.brier_score_loss(y, s)) and brier_score(y, s) == row.brier
    assert row.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert row.real_accuracy == pytest.approx(skm.recall_score(y, pred, pos_label=0))  # label 0 is real
    assert row.fake_accuracy == pytest.approx(skm.recall_score(y, pred, pos_label=1))
    flipped = metrics_row(y, s, threshold=0.5, set="clean", positive="real")  # label 1 is real now
    assert flipped.real_accuracy == row.fake_accuracy and flipped.fake_accuracy == row.real_accuracy


def test_ece_matches_sklearn_calibration_curve():
    y, s = scored(500, 500, seed=3, decimals=None)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=15, strategy="uniform")
    counts = np.histogram(s, bins=np.linspace(0, 1, 16))[0]
    counts = counts[counts > 0]
    assert ece_score(y, s) == pytest.approx(float(np.sum(counts / len(y) * np.abs(prob_true - prob_pred))))
    assert ece_score(y, y.astype(float)) == 0.0  # perfectly confident and right


def test_unresolvable_and_undefined_are_null_with_a_note():
    y, s = scored(200, 200)
    row = metrics_row(y, s, threshold=0.5, set="clean", bootstrap=200)
    d = row.to_dict()
    assert d["tpr_at_fpr_0.01"] is not None and d["tpr_at_fpr_0.001"] is None
    assert "needs >= 1000 negative (real) images, the set has 200" in d["note"]
    fakes = metrics_row(np.ones(50, np.int64), s[:50], threshold=0.5, set="adversarial", variant="fgsm", bootstrap=200)
    assert fakes.fake_accuracy is not None and fakes.real_accuracy is None and fakes.balanced_accuracy is None
    assert fakes.eer is None and fakes.auc_ci is None and fakes.accuracy_ci is not None
    assert "no real images" in fakes.note and "one class present" in fakes.note


def test_row_names_round_trip_and_csv_and_markdown():
    y, s = scored(300, 300)
    row = metrics_row(y, s, threshold=0.5, set="clean", bootstrap=100)
    d = row.to_dict()
    for name in ("tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "fpr_at_tpr_0.95", "tpr_at_fpr_0.01_ci", "accuracy_ci", "auc_ci", "eer", "brier", "ece"):
        assert name in d
    assert isinstance(d["accuracy_ci"], list) and len(d["accuracy_ci"]) == 2
    assert MetricsRow.from_dict(d) == row
    header, line = metrics_csv([row]).splitlines()
    assert "tpr_at_fpr_0.01_ci" in header.split(",")
    assert f"[{d['accuracy_ci'][0]!r}, {d['accuracy_ci'][1]!r}]" in line
    md = metrics_markdown([row])
    assert "## Operating points" in md and "TPR @ 1% FPR" in md
    assert "| Test Data | Accuracy | Precision | Recall | F1 Score | Misclassifications | AUC |" in md  # published table unchanged


def test_bootstrap_is_seeded_stratified_and_covers_the_point_estimate():
    y, s = scored(400, 200, seed=5)
    a = bootstrap_intervals(y, s, resamples=500, seed=1)
    assert a == bootstrap_intervals(y, s, resamples=500, seed=1)
    assert a != bootstrap_intervals(y, s, resamples=500, seed=2)
    acc = float(np.mean((s >= 0.5) == y))
    lo, hi = a["accuracy_ci"]
    assert lo < acc < hi and hi - lo < 0.15
    assert a["auc_ci"][0] < skm.roc_auc_score(y, s) < a["auc_ci"][1]
    assert a["tpr_at_fpr_0.01_ci"][0] <= tpr_at_fpr_score(y, s, fpr=0.01) <= a["tpr_at_fpr_0.01_ci"][1]
    # a naive loop bootstrap (resample each class on its own) gives about the same interval
    rng = np.random.default_rng(0)
    neg, pos = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    naive_acc, naive_auc = [], []
    for _ in range(500):
        i = np.r_[rng.choice(neg, len(neg)), rng.choice(pos, len(pos))]
        naive_acc.append(np.mean((s[i] >= 0.5) == y[i]))
        naive_auc.append(skm.roc_auc_score(y[i], s[i]))
    assert np.allclose(a["accuracy_ci"], np.percentile(naive_acc, [2.5, 97.5]), atol=0.015)
    assert np.allclose(a["auc_ci"], np.percentile(naive_auc, [2.5, 97.5]), atol=0.015)
    assert bootstrap_intervals(y, s, resamples=0) == {"accuracy_ci": None, "auc_ci": None, "tpr_at_fpr_0.01_ci": None}


def test_bootstrap_keeps_the_class_balance():
    # all negatives right, all positives wrong: any stratified resample has accuracy exactly n_neg / n
    y = np.r_[np.zeros(30, np.int64), np.ones(10, np.int64)]
    s = np.full(40, 0.1)
    assert bootstrap_intervals(y, s, resamples=300, seed=0)["accuracy_ci"] == (0.75, 0.75)


def test_worst_case_row_from_correctness_only():
    y = np.r_[np.zeros(60, np.int64), np.ones(40, np.int64)]
    correct = np.r_[np.ones(50, bool), np.zeros(10, bool), np.ones(10, bool), np.zeros(30, bool)]
    row = row_from_correct(correct, set="worst-case", variant="none", param="", threshold=0.5, y_true=y, bootstrap=300)
    assert row.accuracy == pytest.approx(0.6) and row.real_accuracy == pytest.approx(50 / 60) and row.fake_accuracy == pytest.approx(0.25)
    assert row.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, np.where(correct, y, 1 - y)))
    assert row.accuracy_ci[0] < 0.6 < row.accuracy_ci[1]
    assert row.auc is None and row.eer is None and row.brier is None and row.auc_ci is None
    assert "built from per-image correctness" in row.note


@pytest.mark.parametrize("right", [True, False], ids=["all-right", "all-wrong"])
def test_worst_case_row_with_a_single_outcome(right: bool):
    y = np.repeat([0, 1], 10)
    row = row_from_correct(np.full(20, right), set="worst-case", variant="none", param="", threshold=0.5, y_true=y, bootstrap=100)
    assert row.accuracy == float(right) and row.accuracy_ci == (float(right), float(right))
