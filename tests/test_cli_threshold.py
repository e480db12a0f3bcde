"""`robustlab threshold` and `robustlab evaluate --val` end to end through Click, with a tiny real
trained CNN (conftest.trained_detector) and real PNG folders."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, make_images, run, write_class_folder

from robustlab.data import open_dataset
from robustlab.detector.loading import load_detector
from robustlab.detector.spec import read_spec
from robustlab.metrics import binary_scores


@pytest.fixture(scope="session")
def val_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A validation real/ fake/ PNG folder for ``trained_detector``, separate from the test set."""
    x, y = make_images(30, seed=11)
    return write_class_folder(tmp_path_factory.mktemp("valset") / "val", x, y)


@pytest.fixture(scope="session")
def val_scores(trained_detector, val_folder):
    """(y, scores) of the validation folder, computed here independently of robustlab.thresholds."""
    det = load_detector(trained_detector)
    data = open_dataset(val_folder)
    arrays = data.load_arrays(det.input_size)
    return arrays.y, det.scores(arrays.x)


def threshold_json(*args: str) -> dict:
    res = run("threshold", *args, "--json", "-q")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.mark.parametrize("strategy", ["max-f1", "precision:0.9", "recall:0.95", "youden", "fixed:0.5"])
def test_threshold_reproduces_what_it_reports(trained_detector, val_folder, val_scores, strategy):
    out = threshold_json(str(trained_detector), str(val_folder), "--strategy", strategy, "--bootstrap", "200")
    y, s = val_scores
    t = out["threshold"]
    on_val = out["on_validation"]
    r = binary_scores(y, s, threshold=t)
    assert abs(r["f1"] - on_val["f1"]) < 1e-9 and abs(r["precision"] - on_val["precision"]) < 1e-9 and abs(r["recall"] - on_val["recall"]) < 1e-9
    assert out["strategy"] == strategy and 0.0 <= t <= 1.0
    if strategy.startswith("precision:"):
        assert on_val["precision"] >= 0.9
    if strategy.startswith("recall:"):
        assert on_val["recall"] >= 0.95
    if strategy == "max-f1":  # no other threshold does better on the validation set
        assert all(binary_scores(y, s, threshold=u)["f1"] <= on_val["f1"] + 1e-12 for u in np.unique(s))
    b = out["bootstrap"]
    assert b["n"] == 200 and b["low"] <= b["high"]
    assert out["validation"]["n"] == 60 and len(out["validation_fingerprint"]) == 64


def test_threshold_text_output_and_seed(trained_detector, val_folder):
    a = run("threshold", str(trained_detector), str(val_folder), "--bootstrap", "100", "--seed", "4")
    b = run("threshold", str(trained_detector), str(val_folder), "--bootstrap", "100", "--seed", "4")
    assert a.exit_code == 0 and a.output == b.output
    for word in ("threshold", "precision", "recall", "f1", "bootstrap", "95% interval", "plateau", "at 0.5"):
        assert word in a.output, a.output


def test_write_into_a_spec_needs_force_and_evaluate_then_uses_it(trained_detector, val_folder, test_images_folder, tmp_path):
    det_dir = tmp_path / "det"
    shutil.copytree(trained_detector.parent, det_dir)
    spec = det_dir / "detector.yaml"
    before = spec.read_bytes()
    refused = run("threshold", str(spec), str(val_folder), "--strategy", "youden", "--write")
    assert_one_line_error(refused, "already says threshold: 0.5", "--force")
    assert spec.read_bytes() == before
    out = threshold_json(str(spec), str(val_folder), "--strategy", "youden", "--write", "--force")
    t = out["threshold"]
    assert out["written"] == str(spec)
    assert read_spec(spec).threshold == t
    assert (det_dir / "model.keras").read_bytes() == (trained_detector.parent / "model.keras").read_bytes()
    ev = run("evaluate", str(spec), str(test_images_folder), "--out", str(tmp_path / "run"), "-q")
    assert ev.exit_code == 0, ev.output
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["rows"]
    assert rows[0]["threshold"] == t


def test_write_for_a_bare_model_path(trained_detector, val_folder, tmp_path):
    model = tmp_path / "m.keras"
    shutil.copy(trained_detector.parent / "model.keras", model)
    args = (str(model), str(val_folder), "--scale", "0-1", "--bootstrap", "0", "--write")
    res = run("threshold", *args)
    assert res.exit_code == 0, res.output
    spec = read_spec(tmp_path / "m.yaml")
    assert spec.scale.value == "0-1" and spec.model == model.resolve() and 0 < spec.threshold < 1
    assert_one_line_error(run("threshold", *args), "m.yaml", "already exists")
    # the new spec is a working detector spec
    assert load_detector(tmp_path / "m.yaml").threshold == spec.threshold


def test_threshold_bad_input_is_one_line_exit_2(trained_detector, val_folder, tmp_path):
    det = str(trained_detector)
    assert_one_line_error(run("threshold", det, str(val_folder), "--strategy", "bogus"), "unknown threshold strategy 'bogus'", "max-f1")
    assert_one_line_error(run("threshold", det, str(val_folder), "--strategy", "precision:2"), "outside (0, 1]")
    # one class in the validation set
    x, y = make_images(5, seed=2)
    only_real = tmp_path / "only_real"
    write_class_folder(only_real, x[y == 0], y[y == 0], names=("real", "fake"))
    assert_one_line_error(run("threshold", det, str(only_real)), "one class")
    # a validation set on which no threshold reaches the precision: labels swapped
    x, y = make_images(15, seed=5)
    swapped = write_class_folder(tmp_path / "swapped", x, 1 - y)
    assert_one_line_error(run("threshold", det, str(swapped), "--strategy", "precision:0.99", "--bootstrap", "0"), "no threshold reaches precision >= 0.99", "best reachable is precision")


def test_evaluate_with_val_applies_the_threshold_everywhere(trained_detector, val_folder, val_scores, test_images_folder, tmp_path):
    out = tmp_path / "run"
    res = run("evaluate", str(trained_detector), str(test_images_folder), "--val", str(val_folder), "--threshold-strategy", "recall:0.99", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    info = json.loads((out / "run.json").read_text())
    sel = info["threshold_selection"]
    t = sel["threshold"]
    assert info["threshold"] == t and sel["strategy"] == "recall:0.99" and sel["allow_same_data_used"] is False
    assert sel["validation_fingerprint"] == open_dataset(val_folder).fingerprint() != info["data"]["fingerprint"]
    assert sel["bootstrap"]["low"] <= sel["bootstrap"]["high"]
    y, s = val_scores
    assert binary_scores(y, s, threshold=t)["recall"] >= 0.99
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["threshold"] for r in metrics["rows"]} == {t}
    if t != 0.5:
        assert [r["threshold"] for r in metrics["reference_rows"]] == [0.5]
        md = (out / "metrics.md").read_text()
        assert "| Original Images @ 0.5 |" in md and f"| Original Images @ {t:g} |" in md and "recall:0.99" in md
    preds = [line.split(",") for line in (out / "predictions.csv").read_text().splitlines()[1:]]
    assert all(int(p[7]) == int(float(p[6]) >= t) or abs(float(p[6]) - t) < 1e-6 for p in preds)
    assert (out / "plots" / "pr.png").stat().st_size > 1000


def test_evaluate_refuses_leakage_unless_allowed(trained_detector, test_images_folder, tmp_path):
    det, data = str(trained_detector), str(test_images_folder)
    refused = run("evaluate", det, data, "--val", data, "--out", str(tmp_path / "r1"))
    assert_one_line_error(refused, "same fingerprint", "--allow-same-data")
    assert not (tmp_path / "r1").exists()
    res = run("evaluate", det, data, "--val", data, "--allow-same-data", "--out", str(tmp_path / "r2"), "-q")
    assert res.exit_code == 0, res.output
    sel = json.loads((tmp_path / "r2" / "run.json").read_text())["threshold_selection"]
    assert sel["allow_same_data_used"] is True and sel["same_data"]["same_data"] is True
    assert "Warning: the threshold was picked on the evaluated images themselves" in (tmp_path / "r2" / "metrics.md").read_text()


def test_evaluate_threshold_option_conflicts(trained_detector, val_folder, test_images_folder, tmp_path):
    det, data = str(trained_detector), str(test_images_folder)
    assert_one_line_error(run("evaluate", det, data, "--threshold-strategy", "youden", "--out", str(tmp_path / "a")), "--val")
    assert_one_line_error(run("evaluate", det, data, "--val", str(val_folder), "--threshold", "0.3", "--out", str(tmp_path / "b")), "--threshold")
    assert_one_line_error(run("evaluate", det, data, "--val", str(val_folder), "--threshold-strategy", "f2", "--out", str(tmp_path / "c")), "unknown threshold strategy")


def test_rows_at_both_thresholds_for_every_set(trained_detector, val_folder, test_images_folder):
    """Library level: with a variant, every set (adversarial-style subset, mixed, worst-case) gets
    its row at the chosen threshold and at 0.5."""
    from robustlab.enums import SetKind
    from robustlab.evaluation.pipeline import evaluate
    from robustlab.evaluation.selection import select_threshold
    from robustlab.results import Delivery

    class Brighten:  # a real variant: shifts every pixel by +40 grey levels (clipped)
        kind = SetKind.ADVERSARIAL
        variant = "brighten"
        param = "delta=40"

        def apply(self, detector, x, y, rng):
            return Delivery(np.clip(x.astype(np.int16) + 40, 0, 255).astype(np.uint8))

        def diagnostics(self, outcome, threshold):
            return []

        def summary(self, outcome):
            return None

    det = load_detector(trained_detector)
    data = open_dataset(test_images_folder)
    sel = select_threshold(det, open_dataset(val_folder), "precision:0.95", data=data, bootstrap=50)
    result = evaluate(det, data, variants=[Brighten()], attack_fraction=0.5, threshold_selection=sel)
    keys = [(r.set, r.variant, r.param) for r in result.rows]
    assert keys == [(r.set, r.variant, r.param) for r in result.reference_rows]
    assert [r.set for r in result.rows] == ["clean", "adversarial", "mixed", "worst-case"]
    assert {r.threshold for r in result.rows} == {sel.threshold} and {r.threshold for r in result.reference_rows} == {0.5}
    assert result.info.threshold_selection["on_validation"]["precision"] >= 0.95
