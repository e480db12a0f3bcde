"""Tracking: --mlflow on evaluate / attack logs params, every row's metrics and the run folder;
--tensorboard on adv-train logs the history per epoch; without MLflow, exit 2 naming the install."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_images, run, tiny_cnn, write_class_folder

from robustlab.cli import main
from robustlab.tracking import TensorBoardHistory, metric_key, row_metrics, row_name

ROOT = Path(__file__).resolve().parents[1]


def test_metric_keys_are_sanitized_deterministically() -> None:
    assert metric_key("clean", "accuracy") == "clean.accuracy"
    assert metric_key("fgsm[eps=8/255]", "f1") == "fgsm:eps_8/255.f1"
    assert metric_key("pgd[eps=8/255,steps=10]", "accuracy") == "pgd:eps_8/255:steps_10.accuracy"
    assert metric_key("mixed[fgsm,eps=8/255]", "tpr_at_fpr_0.01") == "mixed:fgsm:eps_8/255.tpr_at_fpr_0.01"
    assert metric_key("x[a=b*c]", "é") == "x:a_b_c._"


def test_row_names_and_metrics() -> None:
    rows = [
        {"set": "clean", "variant": "none", "param": "", "n": 10, "accuracy": 0.9, "auc": None, "note": "x", "accuracy_ci": [0.8, 0.95]},
        {"set": "adversarial", "variant": "fgsm", "param": "eps=0.03137254901960784", "n": 10, "accuracy": 0.5},
        {"set": "mixed", "variant": "fgsm", "param": "eps=0.03137254901960784", "n": 20, "accuracy": 0.7},
        {"set": "worst-case", "variant": "none", "param": "", "n": 10, "accuracy": 0.4},
    ]
    assert [row_name(r) for r in rows] == ["clean", "fgsm[eps=8/255]", "mixed[fgsm,eps=8/255]", "worst-case"]
    m = row_metrics(rows)
    assert m["clean.accuracy"] == 0.9 and m["clean.accuracy_ci.lo"] == 0.8 and m["clean.accuracy_ci.hi"] == 0.95
    assert "clean.auc" not in m and "clean.note" not in m  # null and text are not metrics
    assert m["fgsm:eps_8/255.accuracy"] == 0.5 and m["mixed:fgsm:eps_8/255.n"] == 20.0 and m["worst-case.accuracy"] == 0.4


def test_evaluate_logs_to_mlflow(trained_detector: Path, test_images_folder: Path, tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    out = tmp_path / "run"
    res = run("evaluate", str(trained_detector), str(test_images_folder), "--attack", "fgsm:eps=8/255", "--out", str(out), "--quiet", f"--mlflow={store}")
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    client = mlflow.tracking.MlflowClient(tracking_uri=store.resolve().as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("robustlab").experiment_id])
    assert found.data.metrics["clean.accuracy"] == pytest.approx(rows[0]["accuracy"])
    assert found.data.metrics["fgsm:eps_8/255.accuracy"] == pytest.approx(rows[1]["accuracy"])
    assert found.data.metrics["mixed:fgsm:eps_8/255.n"] == rows[2]["n"]
    assert found.data.params["detector"] == "tiny-cnn" and found.data.params["seed"] == "0"
    assert found.data.tags["robustlab.run_folder"] == str(out.resolve())
    logged = {a.path for a in client.list_artifacts(found.info.run_id, "run")}
    assert {"run/run.json", "run/metrics.json", "run/predictions.csv", "run/report.html"} <= logged


def test_attack_logs_to_the_default_store(trained_detector: Path, test_images_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    res = run("attack", str(trained_detector), str(test_images_folder), "--fraction", "0.25", "--no-save-images", "--out", "run", "--quiet", "--mlflow")
    assert res.exit_code == 0, res.output
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("robustlab").experiment_id])
    assert found.data.metrics["fgsm:eps_8/255.n"] == 20  # the attacked quarter of 80


def test_without_mlflow_exit_2_names_the_install(trained_detector: Path, test_images_folder: Path, tmp_path: Path) -> None:
    code = "import sys; sys.modules['mlflow'] = None; from robustlab.cli import main; sys.exit(main())"
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", code, "evaluate", str(trained_detector), str(test_images_folder), "--out", str(out), "--mlflow"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("robustlab: error: ") and "MLflow is not installed" in lines[0] and "pip install 'robustlab[mlflow]'" in lines[0], res.stderr
    assert not out.exists()  # checked before any work


def _scalars(logdir: Path) -> dict[str, dict[int, float]]:
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for f in sorted(logdir.glob("events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(str(f)):
            ev = tf.compat.v1.Event.FromString(raw.numpy())
            for v in ev.summary.value:
                if v.metadata.plugin_data.plugin_name == "scalars":
                    out.setdefault(v.tag, {})[int(ev.step)] = float(tf.make_ndarray(v.tensor))
    return out


def test_tensorboard_history_hook(tmp_path: Path) -> None:
    hook = TensorBoardHistory(tmp_path / "tb")
    hook({"epoch": 1, "loss": 0.7, "val_loss": 0.6, "lr": 1e-3, "event": "best"})
    hook({"epoch": 2, "loss": 0.5, "val_loss": 0.65, "lr": 5e-4, "event": ""})
    hook.close()
    s = _scalars(tmp_path / "tb")
    assert s["loss"] == {1: pytest.approx(0.7), 2: pytest.approx(0.5)}
    assert s["lr"][2] == pytest.approx(5e-4) and "event" not in s


def test_adv_train_tensorboard(tmp_path: Path) -> None:
    import keras

    x, y = make_images(12, seed=3)
    write_class_folder(tmp_path / "train", x, y)
    xv, yv = make_images(6, seed=4)
    write_class_folder(tmp_path / "val", xv, yv)
    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.save(tmp_path / "model.keras")
    (tmp_path / "d.yaml").write_text("model: model.keras\nscale: '0-1'\noutput: sigmoid\nclasses: [fake]\n", encoding="utf-8")
    fast = ["--epochs", "2", "--patience", "0", "--batch-size", "8", "--guard-size", "4", "--pgd-steps", "1", "--eval-attack", "fgsm:eps=8/255", "--eval-corruption", "jpeg:2", "--eval-fraction", "0.5", "--quiet"]
    res = CliRunner().invoke(main, ["adv-train", str(tmp_path / "d.yaml"), str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--out", str(tmp_path / "new"), "--tensorboard", str(tmp_path / "tb"), *fast], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    s = _scalars(tmp_path / "tb")
    history = (tmp_path / "new" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs
    assert set(s["loss"]) == {1, 2} and set(s["val_loss"]) == {1, 2}
    assert np.isfinite(list(s["val_adv_loss"].values())).all()
