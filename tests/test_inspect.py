"""`robustlab inspect DETECTOR [DATA]`: what the file is, the spec robustlab uses, and the
preprocessing check that catches a wrong colour order or scale. Real files, Click's CliRunner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_class_folder

from robustlab.cli import main

SIZE = 16


def colour_images(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real images are reddish, fake ones bluish (noise on top): x uint8 (2n, 16, 16, 3), y (fake = 1)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, (r, b) in ((0, (170, 90)), (1, (90, 170))):
        for _ in range(n_per_class):
            img = np.empty((SIZE, SIZE, 3))
            img[..., 0] = r + rng.normal(0, 12, (SIZE, SIZE))
            img[..., 1] = rng.uniform(60, 200) + rng.normal(0, 12, (SIZE, SIZE))
            img[..., 2] = b + rng.normal(0, 12, (SIZE, SIZE))
            xs.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64)


def bgr_0_255_detector(path: Path) -> Path:
    """A model that is right only on BGR pixels in 0-255 (the OpenCV way): P(fake) from blue - red.

    In BGR order channel 0 is blue. logit = 0.05 * (mean c0 - mean c2) - 1: on 0-255 BGR input
    fakes score about +3, reals -5; with RGB the sign flips; on 0-1, -1-1 or ImageNet scales the
    logit stays near -1 and everything is called real.
    """
    import keras

    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    dense = keras.layers.Dense(1, activation="sigmoid", name="p_fake")
    out = dense(x)
    dense.set_weights([np.array([[0.05], [0.0], [-0.05]], np.float32), np.array([-1.0], np.float32)])
    keras.Model(inp, out).save(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspect")
    x, y = colour_images(12)
    write_class_folder(root / "data", x, y)
    model = bgr_0_255_detector(root / "opencv_model.keras")
    (root / "right.yaml").write_text("name: opencv\nmodel: opencv_model.keras\ncolor: bgr\nscale: '0-255'\nclasses: [fake]\n")
    (root / "wrong.yaml").write_text("name: opencv\nmodel: opencv_model.keras\ncolor: rgb\nscale: '0-1'\nclasses: [fake]\n")
    return {"root": root, "data": root / "data", "model": model}


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_inspect_a_model_file(setup):
    res = run("inspect", str(setup["model"]))
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "Keras .keras archive" in out and "saved by Keras 3" in out
    assert "loader        keras 3" in out and "safe_mode=True" in out
    assert "weights       verified:" in out
    assert "input         [None, 16, 16, 3]" in out and "output        [None, 1] sigmoid = P(fake)" in out
    assert "spec (what robustlab uses" in out and '  scale: "0-255"' in out
    assert "color/scale: default (rgb, 0-255): check them with DATA" in out
    assert "output: inferred from the last layer's sigmoid activation" in out


def test_inspect_json_report(setup):
    res = run("inspect", str(setup["root"] / "right.yaml"), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["loaded"] is True and report["framework"] == "keras"
    assert report["file"]["format"] == "keras" and report["file"]["layers"] == 3
    assert report["spec"]["color"] == "bgr" and report["spec"]["input_size"] == [16, 16]
    assert report["inferred"]["input_size"] == "model input shape" and report["inferred"]["color/scale"] == "spec"
    assert "preprocessing_check" not in report


def test_preprocessing_check_agrees_with_the_right_spec(setup):
    res = run("inspect", str(setup["root"] / "right.yaml"), str(setup["data"]), "--json")
    assert res.exit_code == 0, res.output
    check = json.loads(res.stdout)["preprocessing_check"]
    assert check["n"] == 24 and check["counts"] == {"real": 12, "fake": 12}
    assert len(check["rows"]) == 8  # rgb/bgr x 0-255 / 0-1 / -1-1 / imagenet
    best = check["rows"][0]
    assert (best["color"], best["scale"], best["configured"]) == ("bgr", "0-255", True) and best["accuracy"] == 1.0
    assert check["warnings"] == []
    by = {(r["color"], r["scale"]): r for r in check["rows"]}
    assert by[("rgb", "0-255")]["accuracy"] == 0.0  # the colour order flips the answer
    assert by[("bgr", "0-1")]["accuracy"] == 0.5 and by[("rgb", "imagenet")]["accuracy"] == 0.5  # everything "real"


def test_preprocessing_check_warns_about_the_wrong_spec(setup):
    res = run("inspect", str(setup["root"] / "wrong.yaml"), str(setup["data"]), "--sample", "16")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "preprocessing check on 16 images" in out and "(8 real, 8 fake)" in out
    table = out[out.index("preprocessing check") :]
    assert table.count("%") >= 8  # an accuracy for each preprocessing
    assert "rgb   0-1           50.0%" in table and "<- configured" in table
    assert "bgr   0-255        100.0%" in table
    warning = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1
    assert "configured preprocessing (rgb, 0-1) is not the best" in warning[0] and "50.0% vs 100.0% with bgr, 0-255" in warning[0]
    assert "--color bgr --scale 0-255" in warning[0]


def test_preprocessing_check_flags_a_reversed_class_order(setup):
    res = run("inspect", str(setup["root"] / "right.yaml"), str(setup["data"]), "--model-classes", "real")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stdout.splitlines() if line.startswith("warning:")]
    assert any("class order looks reversed; try classes: ['fake']" in w for w in warnings), res.stdout


def test_inspect_refused_model_shows_what_it_holds_and_exits_2(tmp_path):
    import tf_keras

    L = tf_keras.layers
    inp = L.Input((SIZE, SIZE, 3))
    a = L.GlobalAveragePooling2D()(inp)
    b = L.GlobalAveragePooling2D()(L.Conv2D(3, 1)(inp))
    out = L.Dense(2, activation="softmax")(L.Lambda(lambda t: t[0] / t[1], name="RescaleGAP")([a, b]))
    tf_keras.Model(inp, out).save(tmp_path / "best_model_effatt.h5")
    res = run("inspect", str(tmp_path / "best_model_effatt.h5"))
    assert res.exit_code == 2
    assert "saved by Keras 2." in res.stdout and "(Keras 2 / tf-keras)" in res.stdout
    assert "Lambda layer RescaleGAP: python lambda (Python bytecode)" in res.stdout
    assert "loaded        no:" in res.stdout
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("robustlab: error: ") and "--trust-model" in err[0]


def test_inspect_a_truncated_file(tmp_path):
    from conftest import tiny_cnn

    tiny_cnn(SIZE).save(tmp_path / "m.h5")
    data = (tmp_path / "m.h5").read_bytes()
    (tmp_path / "m.h5").write_bytes(data[: len(data) // 2])
    res = run("inspect", str(tmp_path / "m.h5"))
    assert res.exit_code == 2
    assert "truncated HDF5 file" in res.stderr and len(res.stderr.strip().splitlines()) == 1
