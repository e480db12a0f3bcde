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


# --------------------------------------------------------------------------- resize backends and skew

BIG = 64  # files are 64x64, the model takes 16x16: every image is resized 4x


def noise_images(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real images are smooth gradients; fake ones carry pixel-level noise (sd 40) on top.
    x uint8 (2n, 64, 64, 3), y (fake = 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:BIG, 0:BIG] / BIG
    xs, ys = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            a, b, c = rng.uniform(40, 120, 3)
            img = (a + 60 * yy + 60 * xx)[..., None] + np.array([0.0, b - 80, c - 80]) + rng.normal(0, 1, (BIG, BIG, 3))
            if label:
                img = img + rng.normal(0, 40, (BIG, BIG, 1))
            xs.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64)


def high_frequency_detector(path: Path) -> Path:
    """P(fake) from pixel-level detail: mean |x - mean of its 8 neighbours| on 0-255 RGB, logit = 0.5 * (detail - 25).

    Resized 4x with Pillow NEAREST (keras load_img) the fakes keep their noise (detail ~30); every
    filter that averages (Pillow bilinear / bicubic / box, cv2 and TF bilinear) smooths it below 25,
    so a model trained through load_img calls everything real when served through PIL.Image.resize.
    """
    import keras

    lap = -np.ones((3, 3), np.float32) / 8.0
    lap[1, 1] = 1.0
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    for c in range(3):
        kernel[:, :, c, 0] = lap / 3.0
        kernel[:, :, c, 1] = -lap / 3.0
    inp = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, 3, use_bias=False, activation="relu", name="detail")
    x = keras.layers.GlobalAveragePooling2D()(conv(inp))
    dense = keras.layers.Dense(1, activation="sigmoid", name="p_fake")
    out = dense(x)
    conv.set_weights([kernel])
    dense.set_weights([np.array([[0.5], [0.5]], np.float32), np.array([-12.5], np.float32)])
    keras.Model(inp, out).save(path)
    return path


@pytest.fixture(scope="module")
def resize_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resize")
    x, y = noise_images(10)
    write_class_folder(root / "data", x, y)
    high_frequency_detector(root / "detail.keras")
    common = "model: detail.keras\ncolor: rgb\nscale: '0-255'\nclasses: [fake]\n"
    (root / "train.yaml").write_text(f"name: training\n{common}resize: pil-nearest\nalpha: drop\nbit16: clip\nexif: ignore\n")
    (root / "app.yaml").write_text(f"name: app\n{common}resize: pil-bicubic\nalpha: drop\nexif: ignore\n")
    (root / "other-size.yaml").write_text("model: detail.keras\ninput_size: [32, 32]\nclasses: [fake]\n")
    (root / "positive-real.yaml").write_text("model: detail.keras\nclasses: [fake]\npositive: real\n")
    return {"root": root, "data": root / "data"}


def test_resize_check_finds_the_training_backend(resize_setup):
    res = run("inspect", str(resize_setup["root"] / "app.yaml"), str(resize_setup["data"]), "--json")
    assert res.exit_code == 0, res.output
    check = json.loads(res.stdout)["preprocessing_check"]
    rows = {r["resize"]: r for r in check["resize_rows"]}
    assert set(rows) == {"pil-nearest", "pil-bilinear", "pil-bicubic", "pil-box", "cv2-linear", "cv2-area", "cv2-cubic", "tf-bilinear", "tf-area", "tf-bilinear-aa"}
    assert check["best_resize"] == "pil-nearest" and rows["pil-nearest"]["accuracy"] == 1.0
    assert rows["pil-bicubic"]["configured"] and rows["pil-bicubic"]["accuracy"] == 0.5 and rows["pil-bicubic"]["max_pixel_diff"] == 0
    assert rows["pil-box"]["accuracy"] == 0.5 and rows["pil-nearest"]["max_pixel_diff"] > 50
    assert any("configured resize (pil-bicubic) is not the best on this sample: 50.0% vs 100.0% with pil-nearest" in w and "--resize pil-nearest" in w for w in check["warnings"])


def test_resize_check_is_quiet_for_the_right_backend_and_for_images_at_input_size(resize_setup, setup):
    res = run("inspect", str(resize_setup["root"] / "train.yaml"), str(resize_setup["data"]))
    assert res.exit_code == 0, res.output
    assert "  pil-nearest        100.0%   1.000               0  <- configured" in res.stdout
    assert not [line for line in res.stdout.splitlines() if line.startswith("warning:")]
    res = run("inspect", str(setup["root"] / "right.yaml"), str(setup["data"]))  # 16x16 files, 16x16 model
    assert "note: every resize backend gives the same pixels on this sample" in res.stdout


def test_skew_report_between_training_and_serving(resize_setup):
    root = resize_setup["root"]
    res = run("inspect", str(root / "train.yaml"), str(resize_setup["data"]), "--skew", str(root / "app.yaml"), "--json")
    assert res.exit_code == 0, res.output
    skew = json.loads(res.stdout)["skew"]
    assert skew["n"] == 20 and skew["counts"] == {"real": 10, "fake": 10}
    assert skew["training"]["resize"] == "pil-nearest" and skew["serving"]["resize"] == "pil-bicubic"
    assert "pillow" in skew["training"]["libraries"]
    assert skew["training_accuracy"] == 1.0 and skew["serving_accuracy"] == 0.5
    assert skew["flips"] == 10  # every fake: called real once the app's bicubic filter smooths its noise
    flipped = [r for r in skew["images"] if r["flipped"]]
    assert len(flipped) == 10 and all(r["label"] == 1 and r["diff"] < -0.5 for r in flipped)
    assert skew["max_abs_diff"] == pytest.approx(max(abs(r["diff"]) for r in skew["images"]))
    assert skew["max_pixel_diff"] > 50
    text = run("inspect", str(root / "train.yaml"), str(resize_setup["data"]), "--skew", str(root / "app.yaml")).stdout
    assert "train/serve skew on 20 images" in text and "decisions 10 of 20 flip" in text
    assert "accuracy  100.0% training, 50.0% serving" in text and "  flipped" in text


def test_skew_without_data_or_with_another_input_size_exits_2(resize_setup):
    root = resize_setup["root"]
    res = run("inspect", str(root / "train.yaml"), "--skew", str(root / "app.yaml"))
    assert res.exit_code == 2 and "--skew needs DATA" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("inspect", str(root / "train.yaml"), str(resize_setup["data"]), "--skew", str(root / "positive-real.yaml"))
    assert res.exit_code == 2 and "positive-real.yaml" in res.stderr and "same input_size and positive" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = run("inspect", str(root / "train.yaml"), str(resize_setup["data"]), "--skew", str(root / "other-size.yaml"))
    assert res.exit_code == 2 and "other-size.yaml: input_size 32x32 does not match" in res.stderr and len(res.stderr.strip().splitlines()) == 1
