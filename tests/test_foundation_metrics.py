"""Metrics: agreement with scikit-learn, the >= rule, undefined values as null with a note."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from robustlab.metrics import (
    binary_scores,
    confusion,
    format_eps,
    metrics_row,
    parse_fraction,
    predict,
)
from robustlab.reporting.tables import metrics_markdown, param_display, row_title


def test_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1)
    r = binary_scores(y, s, threshold=0.5)
    pred = (s >= 0.5).astype(int)
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert r["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert r["ap"] == pytest.approx(skm.average_precision_score(y, s))
    assert r["misclassified"] == int((pred != y).sum())


def test_threshold_rule_is_greater_or_equal():
    assert predict(np.array([0.49, 0.5, 0.51]), 0.5).tolist() == [0, 1, 1]
    assert confusion(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])).tolist() == [[1, 1], [1, 1]]


def test_undefined_metrics_are_null_with_a_note():
    row = metrics_row(np.ones(4, int), np.array([0.9, 0.8, 0.2, 0.7]), threshold=0.5, set="adversarial", variant="fgsm", param="eps=0.0314")
    assert row.auc is None and row.ap is None and "one class" in row.note
    assert row.accuracy == 0.75 and row.recall == 0.75 and row.precision == 1.0
    row = metrics_row(np.array([0, 1]), np.array([0.1, 0.2]), threshold=0.5, set="clean")
    assert row.precision is None and row.f1 is None and "nothing predicted positive" in row.note
    assert row.to_dict()["precision"] is None
    md = metrics_markdown([row])
    assert "n/a" in md and "Notes" in md


def test_eps_parsing_and_display():
    assert parse_fraction("8/255") == pytest.approx(8 / 255)
    assert parse_fraction("0.05") == 0.05
    with pytest.raises(ValueError):
        parse_fraction("eight")
    assert format_eps(8 / 255) == "8/255" and format_eps(0.05) == "0.05"
    assert param_display("eps=0.0314,steps=10") == "eps=8/255, steps=10"
    assert row_title({"set": "adversarial", "variant": "fgsm", "param": "eps=0.0314"}) == "FGSM Adversarial Images (eps=8/255)"


def test_markdown_table_has_the_published_shape():
    y = np.array([0, 0, 1, 1])
    rows = [
        metrics_row(y, np.array([0.1, 0.6, 0.8, 0.9]), threshold=0.5, set="clean"),
        metrics_row(y[2:], np.array([0.2, 0.9]), threshold=0.5, set="adversarial", variant="fgsm", param="eps=0.0314"),
        metrics_row(np.r_[y, y[2:]], np.array([0.1, 0.6, 0.8, 0.9, 0.2, 0.9]), threshold=0.5, set="mixed", variant="fgsm", param="eps=0.0314"),
    ]
    md = metrics_markdown(rows)
    assert "| Test Data | Accuracy | Precision | Recall | F1 Score | Misclassifications | AUC |" in md
    assert "| Original Images | 75.00% |" in md
    assert "| FGSM Adversarial Images (eps=8/255) | 50.00% |" in md
    assert "| (Original + Adversarial) Images |" in md and "2/6 (33.33%)" in md
