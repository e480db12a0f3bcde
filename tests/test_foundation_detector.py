"""Detector loading: formats, preprocessing inside the graph, output kinds and class orders."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import tiny_cnn

from robustlab.detector.loading import load_detector
from robustlab.errors import RobustlabError


def probe_model(size: int = 8, units: int = 1, activation: str = "linear", weights: tuple[float, float, float] = (1.0, 0.0, 0.0)):
    """A model whose output is a fixed linear function of the mean of each input channel."""
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3))
    pooled = layers.GlobalAveragePooling2D()(inp)
    dense = layers.Dense(units, activation=activation)
    out = dense(pooled)
    model = keras.Model(inp, out)
    kernel = np.zeros((3, units), np.float32)
    kernel[:, 0] = weights
    if units == 2:
        kernel[:, 1] = [-w for w in weights]
    dense.set_weights([kernel, np.zeros((units,), np.float32)])
    return model


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


@pytest.mark.parametrize(
    "color,scale,expected",
    [
        ("rgb", "0-1", 0.2),
        ("rgb", "0-255", 0.2 * 255),
        ("rgb", "-1-1", 0.2 * 2 - 1),
        ("bgr", "0-1", 0.6),  # channel 0 is blue after the flip
        ("rgb", "imagenet", (0.2 - 0.485) / 0.229),
        ("bgr", "imagenet", (0.6 - 0.406) / 0.225),
    ],
    ids=lambda v: str(v),
)
def test_preprocessing_happens_inside_the_graph(tmp_path, color, scale, expected):
    m = probe_model()
    m.save(tmp_path / "m.keras")
    det = load_detector(tmp_path / "m.keras", color=color, scale=scale, output="logits")
    x = np.zeros((1, 8, 8, 3), np.uint8)
    x[..., 0] = round(0.2 * 255)
    x[..., 2] = round(0.6 * 255)
    r, b = x[0, 0, 0, 0] / 255.0, x[0, 0, 0, 2] / 255.0
    first = {"rgb": r, "bgr": b}[color]
    mean, std = {"rgb": (0.485, 0.229), "bgr": (0.406, 0.225)}[color]
    z = {"0-1": first, "0-255": first * 255, "-1-1": first * 2 - 1, "imagenet": (first - mean) / std}[scale]
    assert abs(z - expected) < 0.02
    assert det.scores(x)[0] == pytest.approx(_sigmoid(z), abs=1e-5)


def test_output_kinds_and_class_orders(tmp_path):
    x = np.full((1, 8, 8, 3), 128, np.uint8)
    z = 128 / 255.0  # scale 0-1, channel weight 1
    p = _sigmoid(z)
    sig = probe_model(activation="sigmoid")
    sig.save(tmp_path / "sig.keras")
    assert load_detector(tmp_path / "sig.keras", scale="0-1").scores(x)[0] == pytest.approx(p, abs=1e-5)
    det_real = load_detector(tmp_path / "sig.keras", scale="0-1", classes="real")
    assert det_real.scores(x)[0] == pytest.approx(1 - p, abs=1e-5)
    # positive: real with a P(real) unit: score is P(real)
    assert load_detector(tmp_path / "sig.keras", scale="0-1", classes="real", positive="real").scores(x)[0] == pytest.approx(p, abs=1e-5)
    soft = probe_model(units=2, activation="softmax")
    soft.save(tmp_path / "soft.keras")
    q = math.exp(z) / (math.exp(z) + math.exp(-z))  # unit 0
    det_fr = load_detector(tmp_path / "soft.keras", scale="0-1", classes="fake,real")
    assert det_fr.output.value == "softmax" and det_fr.info["output_from"].startswith("inferred")
    assert det_fr.scores(x)[0] == pytest.approx(q, abs=1e-5)
    det_rf = load_detector(tmp_path / "soft.keras", scale="0-1")  # default [real, fake]
    assert det_rf.scores(x)[0] == pytest.approx(1 - q, abs=1e-5)
    lin = probe_model(activation="linear")
    lin.save(tmp_path / "lin.keras")
    det_lin = load_detector(tmp_path / "lin.keras", scale="0-1")
    assert det_lin.output.value == "logits"
    assert det_lin.scores(x)[0] == pytest.approx(p, abs=1e-5)


def test_logits_are_pre_activation_so_gradients_survive_saturation(tmp_path):
    import tensorflow as tf

    m = probe_model(activation="sigmoid", weights=(400.0, 0.0, 0.0))  # saturates: sigmoid(400*x)
    m.save(tmp_path / "sat.keras")
    det = load_detector(tmp_path / "sat.keras", scale="0-1")
    assert det.describe()["logits_from"].startswith("pre-activation")
    x = tf.constant(np.full((1, 8, 8, 3), 0.5, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = det.class_logits(x)
        loss = logits[:, 1] - logits[:, 0]
    g = tape.gradient(loss, x).numpy()
    assert np.abs(g).max() > 0  # the probability is 1.0 in float32, the logit gradient is not zero
    assert det.scores(np.full((1, 8, 8, 3), 128, np.uint8))[0] == pytest.approx(1.0)


def test_formats_keras_h5_savedmodel_json(tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    m = tiny_cnn(16)
    x = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    m.save(tmp_path / "m.keras")
    m.save(tmp_path / "m.h5")
    m.export(tmp_path / "saved")
    (tmp_path / "arch.json").write_text(m.to_json())
    m.save_weights(tmp_path / "arch.weights.h5")
    ref = load_detector(tmp_path / "m.keras", scale="0-255").scores(x)
    assert ref.shape == (5,) and ref.dtype == np.float64 and ((ref >= 0) & (ref <= 1)).all()
    for path, extra in (
        (tmp_path / "m.h5", {}),
        (tmp_path / "saved", {}),
        (tmp_path / "arch.json", {"weights": str(tmp_path / "arch.weights.h5")}),
    ):
        det = load_detector(path, scale="0-255", **extra)
        np.testing.assert_allclose(det.scores(x), ref, atol=1e-5, err_msg=str(path))
        assert det.input_size == (16, 16)
    assert load_detector(tmp_path / "saved").info["format"] == "savedmodel"


def test_spec_file_relative_paths_and_describe(tmp_path):
    (tmp_path / "models").mkdir()
    tiny_cnn(16).save(tmp_path / "models" / "m.keras")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: mine\nmodel: models/m.keras\ncolor: BGR\nscale: '-1-1'\nthreshold: 0.3\n")
    det = load_detector(spec)
    d = det.describe()
    assert d["name"] == "mine" and d["spec"]["color"] == "bgr" and d["threshold"] == 0.3
    assert d["output"] == "sigmoid" and "inferred" in d["output_from"] and d["input_size_from"] == "model input shape"


def test_bad_detectors(tmp_path):
    import keras
    from keras import layers

    with pytest.raises(RobustlabError, match="no such file"):
        load_detector(tmp_path / "nope.keras")
    inp = keras.Input((10,))
    keras.Model(inp, layers.Dense(1, activation="sigmoid")(inp)).save(tmp_path / "vec.keras")
    with pytest.raises(RobustlabError, match="not an image"):
        load_detector(tmp_path / "vec.keras")
    tiny_cnn(16, units=3, activation="softmax").save(tmp_path / "three.keras")
    with pytest.raises(RobustlabError, match="3 units"):
        load_detector(tmp_path / "three.keras")
    tiny_cnn(16).save(tmp_path / "ok.keras")
    (tmp_path / "s1.yaml").write_text("model: ok.keras\ncolour: bgr\n")
    with pytest.raises(RobustlabError, match="unknown key.*colour"):
        load_detector(tmp_path / "s1.yaml")
    (tmp_path / "s2.yaml").write_text("model: ok.keras\nscale: 0-65535\n")
    with pytest.raises(RobustlabError, match="unknown scale"):
        load_detector(tmp_path / "s2.yaml")
    (tmp_path / "s3.yaml").write_text("model: ok.keras\nclasses: [fake, real]\n")
    with pytest.raises(RobustlabError, match="2 classes for a 1-unit"):
        load_detector(tmp_path / "s3.yaml")
    (tmp_path / "s4.yaml").write_text("model: [unclosed\n")
    with pytest.raises(RobustlabError, match="not valid YAML at line"):
        load_detector(tmp_path / "s4.yaml")
    (tmp_path / "arch.json").write_text(keras.models.load_model(tmp_path / "ok.keras").to_json())
    with pytest.raises(RobustlabError, match="needs its weights"):
        load_detector(tmp_path / "arch.json")
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RobustlabError, match="cannot load model"):
        load_detector(tmp_path / "broken.keras")
    assert "\n" not in RobustlabError("a\nb", thing="x", fix="c").one_line()


def _strided_pointwise_model(size: int, channels: int):
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(channels, 3, padding="same")(inp)
    x = layers.Conv2D(channels, 1, strides=2)(x)
    return keras.Model(inp, layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling2D()(x)))


def test_layers_that_crash_onednn_gradients_are_refused_not_segfaulted(tmp_path):
    """TF 2.21's oneDNN kernels kill the process on the gradient of a narrow 1x1 stride-2 Conv2D
    (measured: <= 12 channels at >= 56 px). Attacks and fine-tuning refuse such a model with the
    fix; the test never takes that gradient."""
    from click.testing import CliRunner
    from conftest import make_images, write_class_folder

    from robustlab._tf import gradient_kernel_hazard
    from robustlab.cli import main

    assert gradient_kernel_hazard(_strided_pointwise_model(64, 8)) is not None
    assert gradient_kernel_hazard(_strided_pointwise_model(64, 32)) is None  # wide: fine
    assert gradient_kernel_hazard(_strided_pointwise_model(32, 8)) is None  # small: fine
    _strided_pointwise_model(64, 8).save(tmp_path / "narrow.keras")
    x, y = make_images(2, size=64, seed=1)
    data = write_class_folder(tmp_path / "d", x, y)
    for args in (["attack", str(tmp_path / "narrow.keras"), str(data), "--eps", "8/255", "--out", str(tmp_path / "r")],
                 ["adv-train", str(tmp_path / "narrow.keras"), str(data), "--val", str(data), "--epochs", "1", "--out", str(tmp_path / "new")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, res.output
        assert "TF_ENABLE_ONEDNN_OPTS=0" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "new").exists()
